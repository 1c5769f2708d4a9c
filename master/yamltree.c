/*
 * yamltree.c: libyaml events -> node tree (see yamltree.h).
 */
/* <config.h>, not "config.h": the quoted form would find master/config.h
 * first, since it searches this file's directory before -I. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "keystoned/util.h"
#include "master/yamltree.h"

struct frame {
    struct ks_ynode *node;
    size_t cap;
    bool have_key;          /* mapping: last pair still waits for its value */
};

struct builder {
    struct frame stack[KS_YAML_MAX_DEPTH];
    int depth;
    size_t nodes;
    int ndocs;
    struct ks_ynode *root;
    struct ks_yaml_error *err;
};

bool ks_ynode_is_null(const struct ks_ynode *n)
{
    if (n == NULL)
        return true;
    if (n->type != KS_YSCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

const char *ks_ynode_kind(const struct ks_ynode *n)
{
    if (ks_ynode_is_null(n))
        return "nothing";
    switch (n->type) {
    case KS_YMAP:
        return "a mapping";
    case KS_YSEQ:
        return "a list";
    default:
        return "a scalar";
    }
}

void ks_yaml_free(struct ks_ynode *n)
{
    size_t i;

    if (n == NULL)
        return;
    if (n->type == KS_YMAP) {
        for (i = 0; i < n->n; i++) {
            ks_yaml_free(n->pairs[i].key);
            ks_yaml_free(n->pairs[i].value);
        }
        free(n->pairs);
    } else if (n->type == KS_YSEQ) {
        for (i = 0; i < n->n; i++)
            ks_yaml_free(n->items[i]);
        free(n->items);
    }
    free(n->str);
    free(n);
}

/* The key path of the place the builder is at, for errors that have no
 * better context (caps, aliases). */
static void builder_path(const struct builder *b, char *buf, size_t cap)
{
    size_t pos = 0;
    int i;

    buf[0] = '\0';
    for (i = 0; i < b->depth; i++) {
        const struct frame *f = &b->stack[i];
        bool top = i == b->depth - 1;

        if (f->node->type == KS_YMAP) {
            if (f->node->n == 0 || (top && !f->have_key))
                break;
            ks_appendf(buf, cap, &pos, "%s%s", pos > 0 ? "." : "",
                       f->node->pairs[f->node->n - 1].key->str);
        } else {
            ks_appendf(buf, cap, &pos, "[%zu]", top ? f->node->n : f->node->n - 1);
        }
    }
}

static int fail(struct builder *b, const yaml_mark_t *m, const char *msg)
{
    b->err->line = (int)m->line + 1;
    b->err->col = (int)m->column + 1;
    builder_path(b, b->err->path, sizeof(b->err->path));
    ks_strlcpy(b->err->msg, msg, sizeof(b->err->msg));
    return -1;
}

static struct ks_ynode *new_node(struct builder *b, enum ks_ynode_type type, const yaml_mark_t *m)
{
    struct ks_ynode *n;

    if (++b->nodes > KS_YAML_MAX_NODES) {
        char msg[64];

        snprintf(msg, sizeof(msg), "more than %d nodes", KS_YAML_MAX_NODES);
        fail(b, m, msg);
        return NULL;
    }
    n = calloc(1, sizeof(*n));
    if (n == NULL) {
        fail(b, m, "out of memory");
        return NULL;
    }
    n->type = type;
    n->line = (int)m->line + 1;
    n->col = (int)m->column + 1;
    return n;
}

/* Attach n to the collection being built (or make it the root).  The node
 * is owned by the tree from here on, so error paths only free the root. */
static int attach(struct builder *b, struct ks_ynode *n, const yaml_mark_t *m)
{
    struct frame *f;
    struct ks_ynode *p;

    if (b->depth == 0) {
        b->root = n;
        return 0;
    }
    f = &b->stack[b->depth - 1];
    p = f->node;
    if (p->type == KS_YMAP && f->have_key) {
        p->pairs[p->n - 1].value = n;
        f->have_key = false;
        return 0;
    }
    if (p->type == KS_YMAP && n->type != KS_YSCALAR) {
        ks_yaml_free(n);
        return fail(b, m, "mapping keys must be scalars");
    }
    if (p->n == f->cap) {
        size_t ncap = f->cap ? f->cap * 2 : 4;
        void *np;

        if (p->type == KS_YMAP)
            np = realloc(p->pairs, ncap * sizeof(*p->pairs));
        else
            np = realloc(p->items, ncap * sizeof(*p->items));
        if (np == NULL) {
            ks_yaml_free(n);
            return fail(b, m, "out of memory");
        }
        if (p->type == KS_YMAP)
            p->pairs = np;
        else
            p->items = np;
        f->cap = ncap;
    }
    if (p->type == KS_YMAP) {
        p->pairs[p->n].key = n;
        p->pairs[p->n].value = NULL;
        p->pairs[p->n].dup_line = 0;
        f->have_key = true;
    } else {
        p->items[p->n] = n;
    }
    p->n++;
    return 0;
}

struct keyref {
    const struct ks_ynode *key;
    size_t idx;
};

static int keyref_cmp(const void *a, const void *b)
{
    const struct keyref *x = a, *y = b;
    size_t n = x->key->len < y->key->len ? x->key->len : y->key->len;
    int c = memcmp(x->key->str, y->key->str, n);

    if (c != 0)
        return c;
    if (x->key->len != y->key->len)
        return x->key->len < y->key->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static bool same_key(const struct ks_ynode *a, const struct ks_ynode *b)
{
    return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
}

/* Mark every repeated key with the line of its first occurrence.  Sorting
 * keeps a mapping with thousands of keys from costing n^2 comparisons. */
static int mark_duplicates(struct ks_ynode *m)
{
    struct keyref *refs;
    size_t i, j;

    if (m->n < 2)
        return 0;
    if (m->n <= 16) {
        for (i = 1; i < m->n; i++)
            for (j = 0; j < i; j++)
                if (same_key(m->pairs[i].key, m->pairs[j].key)) {
                    m->pairs[i].dup_line = m->pairs[j].key->line;
                    break;
                }
        return 0;
    }
    refs = malloc(m->n * sizeof(*refs));
    if (refs == NULL)
        return -1;
    for (i = 0; i < m->n; i++) {
        refs[i].key = m->pairs[i].key;
        refs[i].idx = i;
    }
    qsort(refs, m->n, sizeof(*refs), keyref_cmp);
    for (i = 0; i < m->n; i = j) {
        for (j = i + 1; j < m->n && same_key(refs[i].key, refs[j].key); j++)
            m->pairs[refs[j].idx].dup_line = refs[i].key->line;
    }
    free(refs);
    return 0;
}

static int push(struct builder *b, enum ks_ynode_type type, const yaml_event_t *ev)
{
    struct ks_ynode *n;

    if (b->depth >= KS_YAML_MAX_DEPTH) {
        char msg[64];

        snprintf(msg, sizeof(msg), "nesting deeper than %d levels", KS_YAML_MAX_DEPTH);
        return fail(b, &ev->start_mark, msg);
    }
    /* Refuse a collection as a key before streaming its content. */
    if (b->depth > 0) {
        const struct frame *f = &b->stack[b->depth - 1];

        if (f->node->type == KS_YMAP && !f->have_key)
            return fail(b, &ev->start_mark, "mapping keys must be scalars");
    }
    n = new_node(b, type, &ev->start_mark);
    if (n == NULL)
        return -1;
    if (attach(b, n, &ev->start_mark) < 0)
        return -1;
    b->stack[b->depth].node = n;
    b->stack[b->depth].cap = 0;
    b->stack[b->depth].have_key = false;
    b->depth++;
    return 0;
}

static int on_scalar(struct builder *b, const yaml_event_t *ev)
{
    struct ks_ynode *n;

    n = new_node(b, KS_YSCALAR, &ev->start_mark);
    if (n == NULL)
        return -1;
    n->len = ev->data.scalar.length;
    n->str = malloc(n->len + 1);
    if (n->str == NULL) {
        free(n);
        return fail(b, &ev->start_mark, "out of memory");
    }
    memcpy(n->str, ev->data.scalar.value, n->len);
    n->str[n->len] = '\0';
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    return attach(b, n, &ev->start_mark);
}

static int on_event(struct builder *b, const yaml_event_t *ev)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;

    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        break;
    default:
        break;
    }
    if (anchor != NULL)
        return fail(b, &ev->start_mark, "anchors and aliases are not supported");
    if (tag != NULL)
        return fail(b, &ev->start_mark, "tags are not supported");

    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->ndocs > 1)
            return fail(b, &ev->start_mark, "multiple documents are not supported");
        return 0;
    case YAML_ALIAS_EVENT:
        return fail(b, &ev->start_mark, "anchors and aliases are not supported");
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return push(b, KS_YSEQ, ev);
    case YAML_MAPPING_START_EVENT:
        return push(b, KS_YMAP, ev);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        struct ks_ynode *n = b->stack[--b->depth].node;

        if (n->type == KS_YMAP && mark_duplicates(n) < 0)
            return fail(b, &ev->start_mark, "out of memory");
        return 0;
    }
    default:
        return 0;
    }
}

/* libyaml's reader reports a byte offset, not a mark. */
static void offset_to_mark(const char *buf, size_t len, size_t off, yaml_mark_t *m)
{
    size_t i;

    m->line = 0;
    m->column = 0;
    for (i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            m->line++;
            m->column = 0;
        } else {
            m->column++;
        }
    }
}

/* Whether line (0-based) of buf is indented with a tab, or spaces and a
 * tab: libyaml refuses it in words that do not say why. */
#define TAB_HINT "; a tab in the indentation: YAML indents with spaces only"
static bool tab_indented(const char *buf, size_t len, size_t line)
{
    size_t i = 0;

    for (size_t l = 0; l < line && i < len; i++)
        if (buf[i] == '\n')
            l++;
    for (; i < len && (buf[i] == ' ' || buf[i] == '\t'); i++)
        if (buf[i] == '\t')
            return true;
    return false;
}

static void parser_error(struct builder *b, const yaml_parser_t *p, const char *buf, size_t len)
{
    char msg[256];
    yaml_mark_t m = p->problem_mark;

    switch (p->error) {
    case YAML_MEMORY_ERROR:
        snprintf(msg, sizeof(msg), "out of memory");
        break;
    case YAML_READER_ERROR:
        offset_to_mark(buf, len, p->problem_offset, &m);
        if (p->problem_value != -1)
            snprintf(msg, sizeof(msg), "invalid YAML: %s (byte 0x%02x)",
                     p->problem ? p->problem : "unreadable input", p->problem_value & 0xff);
        else
            snprintf(msg, sizeof(msg), "invalid YAML: %s",
                     p->problem ? p->problem : "unreadable input");
        break;
    default:
        if (p->context != NULL)
            snprintf(msg, sizeof(msg), "invalid YAML: %s (%s at line %zu, column %zu)%s",
                     p->problem ? p->problem : "syntax error", p->context,
                     p->context_mark.line + 1, p->context_mark.column + 1,
                     tab_indented(buf, len, m.line) ? TAB_HINT : "");
        else
            snprintf(msg, sizeof(msg), "invalid YAML: %s%s",
                     p->problem ? p->problem : "syntax error",
                     tab_indented(buf, len, m.line) ? TAB_HINT : "");
        break;
    }
    fail(b, &m, msg);
    /* libyaml's position is exact; a key path guessed from the builder
     * would often name the previous key, so leave it out. */
    b->err->path[0] = '\0';
}

struct ks_ynode *ks_yaml_parse(const char *buf, size_t len, struct ks_yaml_error *err)
{
    struct builder b;
    yaml_parser_t parser;
    bool done = false;

    memset(&b, 0, sizeof(b));
    memset(err, 0, sizeof(*err));
    b.err = err;
    if (!yaml_parser_initialize(&parser)) {
        ks_strlcpy(err->msg, "out of memory", sizeof(err->msg));
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    while (!done) {
        yaml_event_t ev;
        int rc;

        if (!yaml_parser_parse(&parser, &ev)) {
            parser_error(&b, &parser, buf, len);
            goto fail;
        }
        rc = on_event(&b, &ev);
        done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (rc < 0)
            goto fail;
    }
    yaml_parser_delete(&parser);
    return b.root;

fail:
    yaml_parser_delete(&parser);
    ks_yaml_free(b.root);
    return NULL;
}

struct ks_ynode *ks_yaml_load_file(const char *path, size_t max_size, size_t *size_out,
                                   struct ks_yaml_error *err)
{
    struct ks_ynode *root;
    size_t len = 0;
    char *buf;

    memset(err, 0, sizeof(*err));
    if (size_out != NULL)
        *size_out = 0;
    buf = ks_read_file(path, max_size, &len, err->msg, sizeof(err->msg));
    if (buf == NULL)
        return NULL;
    if (size_out != NULL)
        *size_out = len;
    root = ks_yaml_parse(buf, len, err);
    free(buf);
    return root;
}
