/*
 * out.h: an append-only buffer for the heads the worker writes (the proxy's
 * request and response heads, Lua's response heads), without printf: a
 * head is a few memcpy.  Nothing is written past cap; overflow says that
 * something did not fit, and the caller refuses the head as a whole.
 */
#ifndef KS_OUT_H
#define KS_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "keystoned/util.h"

struct ks_out {
    char *buf;
    size_t cap, len;
    bool overflow;
};

static inline void ks_out_put(struct ks_out *o, const char *s, size_t n)
{
    if (n > o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

/* inline, so that the strlen of a literal folds away */
static inline void ks_out_str(struct ks_out *o, const char *s)
{
    ks_out_put(o, s, strlen(s));
}

static inline void ks_out_dec(struct ks_out *o, uint64_t v)
{
    char num[20];
    ks_out_put(o, num, ks_fmt_dec(num, v));
}

/* "HTTP/1.1 <status> <reason>\r\n".  Statuses are three digits (the
 * response grammar check and res:status() see to it), put by arithmetic;
 * anything else would be formatted in full. */
static inline void ks_out_status_line(struct ks_out *o, int status, const char *reason, size_t reason_len)
{
    char line[] = "HTTP/1.1 000 ";
    if (status >= 100 && status <= 999) {
        line[9] = (char)('0' + status / 100);
        line[10] = (char)('0' + status / 10 % 10);
        line[11] = (char)('0' + status % 10);
        ks_out_put(o, line, sizeof(line) - 1);
    } else {
        ks_out_put(o, line, 9);
        ks_out_dec(o, (uint64_t)(status < 0 ? 0 : status));
        ks_out_put(o, " ", 1);
    }
    ks_out_put(o, reason, reason_len);
    ks_out_put(o, "\r\n", 2);
}

/* A chunk's size line of chunked framing, "<hex size>\r\n", into dst
 * (KS_CHUNK_LINE_MAX bytes); returns its length. */
#define KS_CHUNK_LINE_MAX 18
static inline size_t ks_chunk_size_line(char *dst, uint64_t size)
{
    size_t n = ks_fmt_hex(dst, size, 0);
    memcpy(dst + n, "\r\n", 2);
    return n + 2;
}

/* "name: value\r\n" */
static inline void ks_out_field(struct ks_out *o, const char *name, size_t nl, const char *value,
                                size_t vl)
{
    ks_out_put(o, name, nl);
    ks_out_put(o, ": ", 2);
    ks_out_put(o, value, vl);
    ks_out_put(o, "\r\n", 2);
}

#endif
