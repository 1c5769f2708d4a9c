/*
 * yamltree.h: a YAML document as a small tree of nodes.
 *
 * libyaml's event stream is folded into scalars, mappings and sequences,
 * each with the 1-based line and column where it starts.  Everything a
 * configuration has no use for is refused while streaming, before it can
 * cost anything: anchors and aliases, tags, several documents, non-scalar
 * mapping keys, nesting deeper than KS_YAML_MAX_DEPTH and more than
 * KS_YAML_MAX_NODES nodes (libyaml is quadratic on deeply nested flow
 * collections, so the caps must cut the stream, not the finished tree).
 *
 * Duplicate mapping keys are not an error here: the later pair is marked
 * (dup_line) and kept, so that the caller can report it with its key path
 * along with every other problem.
 */
#ifndef KS_YAMLTREE_H
#define KS_YAMLTREE_H

#include <stdbool.h>
#include <stddef.h>

#define KS_YAML_MAX_DEPTH 32
#define KS_YAML_MAX_NODES 100000

enum ks_ynode_type { KS_YSCALAR, KS_YMAP, KS_YSEQ };

struct ks_ynode;

struct ks_ypair {
    struct ks_ynode *key;       /* always a scalar */
    struct ks_ynode *value;
    int dup_line;               /* > 0: duplicate, first seen at this line */
};

struct ks_ynode {
    enum ks_ynode_type type;
    int line, col;              /* 1-based */
    /* scalar: NUL-terminated, but may hold NUL bytes (len says) */
    char *str;
    size_t len;
    bool plain;                 /* unquoted scalar: may be null, a number... */
    /* collections */
    size_t n;
    struct ks_ynode **items;    /* sequence items */
    struct ks_ypair *pairs;     /* mapping pairs, in document order */
};

/* A fatal problem: where (line 0 = the file as a whole), the key path of
 * the place in the document when known ("server.workers", "" otherwise),
 * and what went wrong. */
struct ks_yaml_error {
    int line, col;
    char path[256];
    char msg[256];
};

/* Parse a buffer.  Returns the root node, or NULL: with err->msg[0] set on
 * error, or err->msg[0] == '\0' when the document is empty. */
struct ks_ynode *ks_yaml_parse(const char *buf, size_t len, struct ks_yaml_error *err);
/* Read a file of at most max_size bytes and parse it; *size_out gets the
 * file size (also on parse errors). */
struct ks_ynode *ks_yaml_load_file(const char *path, size_t max_size, size_t *size_out,
                                   struct ks_yaml_error *err);
void ks_yaml_free(struct ks_ynode *root);

/* A plain scalar spelled as YAML null: "", "~", "null", "Null", "NULL". */
bool ks_ynode_is_null(const struct ks_ynode *n);
/* "a scalar", "a mapping", "a sequence", "null" for messages. */
const char *ks_ynode_kind(const struct ks_ynode *n);

#endif
