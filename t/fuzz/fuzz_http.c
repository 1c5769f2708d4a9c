/*
 * fuzz_http.c: request heads (worker/http.c) and path normalisation
 * (worker/route.c).
 *
 * The input is the bytes a client sent.  ks_http_parse_head() judges them
 * as ks_http_read_head() would; an accepted head must then satisfy the
 * grammar it was checked against, be the same head when parsed from its
 * own bytes alone, carry one framing, never be another HTTP version, and
 * have a path whose normalised form is a fixed point of normalisation
 * with no empty, "." or ".." segment left.  A refused one must get one of
 * the documented statuses.
 */
#include <config.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "shm/table.h"
#include "t/fuzz/fuzz.h"
#include "worker/http.h"
#include "worker/route.h"

#define MAX_HEADERS 20

static const struct ks_t_settings settings = {
    .max_headers = MAX_HEADERS,
    .max_request_line = 1024,
    .max_header_bytes = 2048,
};

static void check_normalised(const char *path, size_t len)
{
    char *out = malloc(len + 2);
    if (out == NULL)
        return;
    ssize_t n = ks_route_normalize(path, len, out);
    if (n >= 0) {
        FUZZ_CHECK(n >= 1 && (size_t)n <= len + 1 && out[0] == '/' && out[n] == '\0', "length %zd", n);
        /* no empty, "." or ".." segment (a trailing "/" is kept) */
        for (ssize_t i = 0; i < n; i++) {
            if (out[i] != '/')
                continue;
            const char *s = out + i + 1;
            const char *e = memchr(s, '/', (size_t)(out + n - s));
            size_t sl = e != NULL ? (size_t)(e - s) : (size_t)(out + n - s);
            bool last = e == NULL;
            FUZZ_CHECK(sl > 0 || last, "empty segment in %.*s", (int)n, out);
            FUZZ_CHECK(!(sl == 1 && s[0] == '.') && !(sl == 2 && s[0] == '.' && s[1] == '.'),
                       "dot segment left in %.*s", (int)n, out);
        }
        /* a fixed point: routing the normalised path again changes nothing */
        char *again = malloc((size_t)n + 2);
        if (again != NULL) {
            ssize_t m = ks_route_normalize(out, (size_t)n, again);
            FUZZ_CHECK(m == n && memcmp(out, again, (size_t)n) == 0, "%.*s changed when normalised again",
                       (int)n, out);
            free(again);
        }
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct ks_header headers[MAX_HEADERS];
    struct ks_request r;
    int status;
    enum ks_head_result hr = ks_http_parse_head(&settings, buf, size, &r, headers, &status);
    enum ks_line_kind line = ks_http_request_line(buf, size);

    if (hr == KS_HEAD_ERROR) {
        FUZZ_CHECK(status == 400 || status == 414 || status == 417 || status == 431 ||
                       status == 501 || status == 505,
                   "status %d", status);
        FUZZ_CHECK(r.error != NULL, "status %d without a reason", status);
        FUZZ_CHECK(status != 505 || line == KS_LINE_UNSUPPORTED, "505 for a line judged %d", line);
    } else if (hr == KS_HEAD_OK) {
        FUZZ_CHECK(status == 0, "status %d", status);
        FUZZ_CHECK(r.head_len > 0 && r.head_len <= size, "head_len %zu of %zu", r.head_len, size);
        FUZZ_CHECK(ks_http_check_head(buf, r.head_len) == NULL, "accepted a head the grammar refuses");
        FUZZ_CHECK(line != KS_LINE_UNSUPPORTED, "accepted another HTTP version");
        FUZZ_CHECK(r.http_major == 1 && r.http_minor <= 1, "HTTP/%u.%u", r.http_major, r.http_minor);
        FUZZ_CHECK(!(r.chunked && r.has_content_length), "two framings");
        FUZZ_CHECK(r.target >= buf && r.target + r.target_len <= buf + r.head_len, "target outside the head");
        FUZZ_CHECK(r.path_len <= r.target_len && memchr(r.path, '\\', r.path_len) == NULL,
                   "a backslash in the path");
        FUZZ_CHECK(r.nheaders <= MAX_HEADERS, "%zu headers", r.nheaders);
        for (const char *h = r.host; *h; h++)
            FUZZ_CHECK(*h < 'A' || *h > 'Z', "Host not lower-cased: %s", r.host);
        /* the head alone is the same head */
        struct ks_header h2[MAX_HEADERS];
        struct ks_request r2;
        int st2;
        FUZZ_CHECK(ks_http_parse_head(&settings, buf, r.head_len, &r2, h2, &st2) == KS_HEAD_OK &&
                       r2.head_len == r.head_len && r2.target_len == r.target_len &&
                       strcmp(r2.method, r.method) == 0 && r2.chunked == r.chunked &&
                       r2.content_length == r.content_length,
                   "the head parsed alone differs (status %d)", st2);
        check_normalised(r.path, r.path_len);
    }
    /* normalisation on its own, for paths the head checks would refuse */
    if (size > 0 && buf[0] == '/')
        check_normalised(buf, size);
    return 0;
}
