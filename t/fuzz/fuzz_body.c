/*
 * fuzz_body.c: body framing (worker/body.c).
 *
 * The input is a whole request; when its head is accepted
 * (ks_http_parse_head) the bytes after it are decoded twice, at once and
 * in pieces of sizes drawn from the input, as reads would deliver them.
 * Both must agree byte for byte on the data, on where the message ends
 * and on whether the framing is refused; a complete body has exactly its
 * Content-Length, and re-serialised trailers are well-formed fields
 * without framing ones.
 */
#include <config.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shm/table.h"
#include "t/fuzz/fuzz.h"
#include "worker/body.h"
#include "worker/http.h"

#define MAX_HEADERS 20
#define ACC_CAP (2048 + 4096)       /* as the proxy sizes it: max_header_bytes + 4096 */

static const struct ks_t_settings settings = {
    .max_headers = MAX_HEADERS,
    .max_request_line = 1024,
    .max_header_bytes = 2048,
};

struct outcome {
    char *data;
    size_t len;
    size_t consumed;
    bool done, failed;
    char trailers[ACC_CAP];
    size_t trailers_len;
};

/* Decode buf[0..len) handing the decoder at most step(i) bytes a call. */
static void decode(http_parser parser, enum ks_body_kind kind, const char *buf, size_t len,
                   const uint8_t *steps, size_t nsteps, struct outcome *o)
{
    static char acc[ACC_CAP];
    struct ks_decoder d;
    ks_decoder_init(&d, &parser, kind, acc, sizeof(acc));
    memset(o, 0, sizeof(*o));
    o->data = malloc(len + 1);
    size_t pos = 0, call = 0;
    while (!d.done && pos < len) {
        size_t n = len - pos;
        if (nsteps > 0) {
            size_t step = (size_t)steps[call++ % nsteps] % 17 + 1;
            if (step < n)
                n = step;
        }
        struct ks_slice s[4];
        size_t ns;
        ssize_t k = ks_decoder_run(&d, buf + pos, n, s, 4, &ns);
        if (k < 0) {
            FUZZ_CHECK(d.error != NULL, "refused without a reason");
            o->failed = true;
            break;
        }
        FUZZ_CHECK((size_t)k <= n, "consumed %zd of %zu", k, n);
        for (size_t i = 0; i < ns; i++) {
            FUZZ_CHECK(s[i].p >= buf + pos && s[i].p + s[i].n <= buf + pos + (size_t)k,
                       "a slice outside what was consumed");
            memcpy(o->data + o->len, s[i].p, s[i].n);
            o->len += s[i].n;
        }
        pos += (size_t)k;
        if (k == 0 && ns == 0 && !d.done)
            break;      /* needs bytes this piece did not have: next piece */
    }
    o->consumed = pos;
    o->done = d.done;
    /* (a refusing call's slices are not kept, but were counted) */
    FUZZ_CHECK(o->failed || d.decoded == o->len, "decoded %llu, sliced %zu",
               (unsigned long long)d.decoded, o->len);
    if (d.done && !o->failed)
        o->trailers_len = ks_decoder_trailers(&d, o->trailers, sizeof(o->trailers) - 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct ks_header headers[MAX_HEADERS];
    struct ks_request r;
    int status;
    if (ks_http_parse_head(&settings, buf, size, &r, headers, &status) != KS_HEAD_OK)
        return 0;
    enum ks_body_kind kind = r.chunked ? KS_BODY_CHUNKED
                             : r.content_length > 0 ? KS_BODY_LENGTH : KS_BODY_NONE;
    if (kind == KS_BODY_NONE)
        return 0;
    const char *body = buf + r.head_len;
    size_t len = size - r.head_len;

    /* the piece sizes come from the head's bytes, so they vary with the input */
    struct outcome whole, pieces;
    decode(r.parser, kind, body, len, NULL, 0, &whole);
    decode(r.parser, kind, body, len, data, r.head_len, &pieces);

    /* the same bytes, however they arrive: the same verdict, data and end
     * (when refused, the slices of the refusing call are not kept, so
     * only what both kept is compared) */
    FUZZ_CHECK(whole.failed == pieces.failed, "refused one way only (at once: %d)", whole.failed);
    size_t common = whole.len < pieces.len ? whole.len : pieces.len;
    FUZZ_CHECK(memcmp(whole.data, pieces.data, common) == 0, "the data differs");
    if (!whole.failed) {
        FUZZ_CHECK(whole.done == pieces.done && whole.len == pieces.len &&
                       whole.consumed == pieces.consumed,
                   "at once: done %d, %zu bytes, %zu consumed; in pieces: done %d, %zu, %zu",
                   whole.done, whole.len, whole.consumed, pieces.done, pieces.len, pieces.consumed);
    }
    if (whole.done && !whole.failed) {
        if (kind == KS_BODY_LENGTH)
            FUZZ_CHECK(whole.len == r.content_length, "%zu bytes for a length of %llu", whole.len,
                       (unsigned long long)r.content_length);
        FUZZ_CHECK(whole.trailers_len == pieces.trailers_len &&
                       memcmp(whole.trailers, pieces.trailers, whole.trailers_len) == 0,
                   "the trailers differ");
        if (whole.trailers_len > 0) {
            memcpy(whole.trailers + whole.trailers_len, "\r\n", 2);
            FUZZ_CHECK(ks_http_check_fields(whole.trailers, whole.trailers_len + 2) == NULL,
                       "re-serialised trailers are malformed");
            for (const char *p = whole.trailers; p < whole.trailers + whole.trailers_len;) {
                FUZZ_CHECK(strncasecmp(p, "content-length:", 15) != 0 &&
                               strncasecmp(p, "transfer-encoding:", 18) != 0 &&
                               strncasecmp(p, "host:", 5) != 0,
                           "a framing or routing field passed as a trailer");
                p = strstr(p, "\r\n") + 2;
            }
        }
    }
    free(whole.data);
    free(pieces.data);
    return 0;
}
