/*
 * http.c: http-parser glue for request heads (see http.h).
 */
#include <config.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "keystoned/util.h"
#include "worker/http.h"

/* One head's parsing state, kept across the reads that bring its bytes. */
struct head_ctx {
    struct ks_request *r;
    struct ks_fields fields;
    size_t max_request_line;
    size_t max_header_bytes;
    const char *via_name;       /* our Via pseudonym */
    int status;                 /* set by a callback that stops the parser */
    bool head_done;
    size_t parsed;              /* bytes http-parser has taken */
    bool parser_failed;         /* it stopped with an error (r->error) */
    enum http_errno failed_with;    /* which */
    bool line_judged;           /* the request line is known not to be 505 */
    size_t lf_scan;             /* bytes looked at for the request line's LF */
};

/* The buffer is contiguous while a head is parsed, so the pieces of a
 * name or a value that http-parser delivers in several calls join. */
int ks_fields_name(struct ks_fields *f, const char *at, size_t len)
{
    if (f->in != KS_FIELDS_NAME) {
        if (f->n == f->max)
            return -1;
        f->h[f->n++] = (struct ks_header){ .name = at };
        f->in = KS_FIELDS_NAME;
    }
    struct ks_header *h = &f->h[f->n - 1];
    h->name_len = (size_t)(at + len - h->name);
    return 0;
}

void ks_fields_value(struct ks_fields *f, const char *at, size_t len)
{
    struct ks_header *h = &f->h[f->n - 1];
    if (f->in != KS_FIELDS_VALUE) {
        h->value = at;
        f->in = KS_FIELDS_VALUE;
    }
    h->value_len = (size_t)(at + len - h->value);
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct head_ctx *h = p->data;
    struct ks_request *r = h->r;
    /* the buffer is contiguous while a head is parsed, so pieces join */
    if (r->target == NULL)
        r->target = at;
    r->target_len = (size_t)(at + len - r->target);
    if (r->target_len > h->max_request_line) {
        h->status = 414;
        r->error = "request line too long";
        return -1;
    }
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct head_ctx *h = p->data;
    if (ks_fields_name(&h->fields, at, len) < 0) {
        h->status = 431;
        h->r->error = "too many header fields";
        return -1;
    }
    h->r->nheaders = h->fields.n;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct head_ctx *h = p->data;
    ks_fields_value(&h->fields, at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct head_ctx *h = p->data;
    h->head_done = true;
    /* stop here: the body is read (or not) by whoever handles the request */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings head_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
};

bool ks_http_token_in(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, token, tl) == 0)
            return true;
    }
    return false;
}

const struct ks_header *ks_http_header(const struct ks_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (ks_http_name_is(r->headers[i].name, r->headers[i].name_len, name))
            return &r->headers[i];
    return NULL;
}

/* ---- grammar ------------------------------------------------------------ */

/* The character classes of RFC 9110 and 3986 as a table: check_fields()
 * looks up every byte of every request and response head, and a table is
 * one load where ranges and a switch were up to a dozen branches.
 * T: tchar (and field-vchar), V: field-vchar, SP or HTAB only; H: also a
 * reg-name byte of a Host (unreserved, sub-delims, '%'), with T (A) or
 * with V (W); one row per 16 bytes. */
enum { C_TCHAR = 1, C_VCHAR = 2, C_HOST = 4 };
#define T (C_TCHAR | C_VCHAR)
#define V C_VCHAR
#define A (T | C_HOST)
#define W (V | C_HOST)
static const unsigned char char_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, V, 0, 0, 0, 0, 0, 0,     /* controls; HTAB */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    V, A, V, T, A, A, A, A, W, W, A, A, W, A, A, V,     /* SP ! " # $ % & ' ( ) * + , - . / */
    A, A, A, A, A, A, A, A, A, A, V, W, V, W, V, V,     /* 0-9 : ; < = > ? */
    V, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A,     /* @ A-O */
    A, A, A, A, A, A, A, A, A, A, A, V, V, V, T, A,     /* P-Z [ \ ] ^ _ */
    T, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A,     /* ` a-o */
    A, A, A, A, A, A, A, A, A, A, A, V, T, V, A, 0,     /* p-z { | } ~ DEL */
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,     /* 0x80-0xff: obs-text */
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
};
#undef T
#undef V
#undef A
#undef W

static bool tchar(unsigned char c)
{
    return char_class[c] & C_TCHAR;
}

/* field-vchar, SP and HTAB: everything but controls and DEL */
static bool vchar(unsigned char c)
{
    return char_class[c] & C_VCHAR;
}

bool ks_http_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!tchar((unsigned char)s[i]))
            return false;
    return true;
}

bool ks_http_is_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!vchar((unsigned char)s[i]))
            return false;
    return true;
}

static bool crlf(const char *p, const char *end)
{
    return end - p >= 2 && p[0] == '\r' && p[1] == '\n';
}

/* *( field-line CRLF ) CRLF, ending exactly at end.  A line starting with
 * whitespace (obs-fold), a name with anything but token characters
 * (also a space before the colon) and a value with a control byte (bare
 * CR, NUL, ...) are refused. */
static const char *check_fields(const char *p, const char *end)
{
    for (;;) {
        if (crlf(p, end))
            return p + 2 == end ? NULL : "bytes after the end of the head";
        if (p < end && (*p == ' ' || *p == '\t'))
            return "obsolete line folding or whitespace before a field name";
        const char *name = p;
        while (p < end && tchar((unsigned char)*p))
            p++;
        if (p == name || p == end || *p != ':')
            return p < end && (*p == ' ' || *p == '\t') ? "whitespace between field name and colon"
                                                        : "malformed field name";
        p++;
        while (p < end && vchar((unsigned char)*p))
            p++;
        if (!crlf(p, end))
            return p < end && (*p == '\r' || *p == '\n') ? "field line not ended by CRLF"
                                                        : "control character in a field value";
        p += 2;
    }
}

static bool http_version(const char *p, const char *end)
{
    return end - p >= 8 && memcmp(p, "HTTP/", 5) == 0 && isdigit((unsigned char)p[5]) &&
           p[6] == '.' && isdigit((unsigned char)p[7]);
}

const char *ks_http_check_head(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    while (crlf(p, end))
        p += 2;
    const char *m = p;
    while (p < end && tchar((unsigned char)*p))
        p++;
    if (p == m || p == end || *p != ' ')
        return "malformed method";
    p++;
    const char *t = p;
    /* visible ASCII but '#': no fragment, no raw bytes >= 0x80 */
    while (p < end && *p > 0x20 && *p < 0x7f && *p != '#')
        p++;
    if (p == t || p == end || *p != ' ')
        return "malformed request target";
    p++;
    if (!http_version(p, end))
        return "malformed HTTP version";
    p += 8;
    if (!crlf(p, end))
        return "request line not ended by CRLF";
    return check_fields(p + 2, end);
}

/* A prefix of "token SP target [SP HTTP-version] CR": could the bytes
 * still become a request line? */
static bool line_prefix(const char *p, const char *end)
{
    const char *m = p;
    while (p < end && tchar((unsigned char)*p))
        p++;
    if (p == end)
        return true;
    if (p == m || *p++ != ' ')
        return false;
    while (p < end && *p > 0x20 && *p < 0x7f && *p != '#')
        p++;
    if (p == end)
        return true;
    if (*p == '\r')
        return p + 1 == end;
    if (*p++ != ' ')
        return false;
    static const char v[] = "HTTP/d.d\r";
    for (size_t i = 0; p < end; i++, p++) {
        if (i == sizeof(v) - 1)
            return false;
        if (v[i] == 'd' ? !isdigit((unsigned char)*p) : *p != v[i])
            return false;
    }
    return true;
}

enum ks_line_kind ks_http_request_line(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    while (crlf(p, end))
        p += 2;
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (lf == NULL)
        return line_prefix(p, end) ? KS_LINE_PARTIAL : KS_LINE_OTHER;
    if (lf == p || lf[-1] != '\r' || !line_prefix(p, lf))
        return KS_LINE_OTHER;
    const char *cr = lf - 1;
    /* line_prefix() held up to the CR, so the line is "token SP target
     * [SP HTTP/d.d]" exactly when it has its target and, after a second
     * space, all of the version */
    const char *sp1 = memchr(p, ' ', (size_t)(cr - p));
    if (sp1 == NULL || sp1 + 1 == cr)
        return KS_LINE_OTHER;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(cr - sp1 - 1));
    if (sp2 == NULL)
        return KS_LINE_UNSUPPORTED;     /* HTTP/0.9: "GET /" */
    if (cr - sp2 != 9)
        return KS_LINE_OTHER;
    /* any HTTP/1.x: a later minor version is served as 1.1 (RFC 9112
     * section 2.3), so only the major version is unsupported */
    if (sp2[6] == '1')
        return KS_LINE_OTHER;
    return KS_LINE_UNSUPPORTED;
}

const char *ks_http_check_response_head(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    if (!http_version(p, end))
        return "malformed HTTP version";
    p += 8;
    if (end - p < 4 || p[0] != ' ' || !isdigit((unsigned char)p[1]) ||
        !isdigit((unsigned char)p[2]) || !isdigit((unsigned char)p[3]))
        return "malformed status";
    if (p[1] == '0' || p[1] > '5')      /* any three digits are not a status */
        return "status code outside 100 to 599";
    p += 4;
    if (p < end && *p == ' ') {
        while (p < end && vchar((unsigned char)*p))
            p++;
    }
    if (!crlf(p, end))
        return "status line not ended by CRLF";
    return check_fields(p + 2, end);
}

const char *ks_http_check_fields(const char *buf, size_t len)
{
    return check_fields(buf, buf + len);
}

/* ASCII letter or digit, or one of extra (never NUL, which strchr finds
 * at the end of every string) */
static bool alnum_or(unsigned char c, const char *extra)
{
    unsigned char lower = c | 0x20;
    return (lower >= 'a' && lower <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr(extra, c) != NULL);
}

bool ks_http_valid_host(const char *v, size_t len)
{
    size_t i = 0;
    if (len > 0 && v[0] == '[') {
        for (i = 1; i < len && v[i] != ']'; i++)
            if (!isxdigit((unsigned char)v[i]) && v[i] != ':' && v[i] != '.')
                return false;
        if (i == len || i == 1)
            return false;
        i++;
    } else {
        for (; i < len && v[i] != ':'; i++)
            if (!(char_class[(unsigned char)v[i]] & C_HOST))
                return false;
    }
    if (i == len)
        return true;
    if (v[i] != ':')
        return false;
    for (i++; i < len; i++)
        if (!isdigit((unsigned char)v[i]))
            return false;
    return true;
}

bool ks_http_sane_request_id(const char *v, size_t len)
{
    if (len == 0 || len > KS_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!alnum_or((unsigned char)v[i], "._~:+/=-"))
            return false;
    return true;
}

/* ---- the head ----------------------------------------------------------- */

static void trim(const char **v, size_t *len)
{
    while (*len > 0 && ((*v)[0] == ' ' || (*v)[0] == '\t')) {
        (*v)++;
        (*len)--;
    }
    while (*len > 0 && ((*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t'))
        (*len)--;
}

bool ks_http_te_is_chunked(const char *v, size_t n)
{
    trim(&v, &n);
    return n == 7 && strncasecmp(v, "chunked", 7) == 0;
}

/* Host: lower-case, without the port or a trailing dot; an IPv6 literal
 * keeps its brackets. */
/* Returns false for a host name longer than r->host holds: cut short, it
 * could match a tenant the full name does not (a wildcard's suffix). */
static bool normalise_host(struct ks_request *r, const char *v, size_t len)
{
    size_t end = len;
    if (len > 0 && v[0] == '[') {
        const char *close = memchr(v, ']', len);
        end = close ? (size_t)(close - v) + 1 : len;
    } else {
        const char *colon = memchr(v, ':', len);
        if (colon != NULL)
            end = (size_t)(colon - v);
        if (end > 0 && v[end - 1] == '.')
            end--;
    }
    if (end >= sizeof(r->host))
        return false;
    for (size_t i = 0; i < end; i++)
        r->host[i] = (char)tolower((unsigned char)v[i]);
    r->host[end] = '\0';
    return true;
}

/* A Max-Forwards value (1*DIGIT, whitespace around), capped; -1 when it
 * is no number (then it is passed on as it is). */
static int max_forwards_of(const char *v, size_t n)
{
    trim(&v, &n);
    if (n == 0)
        return -1;
    long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        if (x < 1000000)
            x = x * 10 + (v[i] - '0');
    }
    return (int)x;
}

static bool scheme_is(const char *t, size_t len, const char *scheme)
{
    size_t n = strlen(scheme);
    return len > n + 3 && strncasecmp(t, scheme, n) == 0 && memcmp(t + n, "://", 3) == 0;
}

/* The port of a Host value (uri-host [":" port]), or dflt when it has none
 * (an empty port too, RFC 3986 section 3.2.3). */
static unsigned long host_port(const char *v, size_t len, unsigned long dflt)
{
    const char *end = v + len, *p = v;
    if (p < end && *p == '[') {
        const char *close = memchr(p, ']', len);
        p = close != NULL ? close + 1 : end;
    } else {
        const char *colon = memchr(p, ':', len);
        p = colon != NULL ? colon : end;
    }
    if (p == end || *p != ':' || p + 1 == end)
        return dflt;
    unsigned long port = 0;
    for (p++; p < end && isdigit((unsigned char)*p) && port <= 65535; p++)
        port = port * 10 + (unsigned long)(*p - '0');
    return port;
}

/* Where the empty port of "scheme://host:" followed by "/", "?" or the
 * end lies in the target (the colon's offset), or 0 when it has none. */
static size_t empty_port_at(const char *t, size_t len)
{
    const char *a = memmem(t, len, "://", 3);
    if (a == NULL)
        return 0;
    a += 3;
    const char *end = a;
    while (end < t + len && *end != '/' && *end != '?')
        end++;
    return end > a && end[-1] == ':' ? (size_t)(end - 1 - t) : 0;
}

/* http_parser_parse_url(), but an empty port is no port, as RFC 9110
 * section 4.2.3 has it ("http://example.com:/" is "http://example.com/"),
 * where http-parser refuses it: a copy without the colon is parsed and
 * the offsets past it moved back onto the target. */
static int parse_target_url(const char *t, size_t len, struct http_parser_url *u)
{
    size_t colon = empty_port_at(t, len);
    if (colon == 0)
        return http_parser_parse_url(t, len, 0, u);
    char copy[2048];
    if (len > sizeof(copy))
        return -1;
    memcpy(copy, t, colon);
    memcpy(copy + colon, t + colon + 1, len - colon - 1);
    if (http_parser_parse_url(copy, len - 1, 0, u) != 0)
        return -1;
    for (int f = 0; f < UF_MAX; f++)
        if ((u->field_set & (1 << f)) && u->field_data[f].off >= colon)
            u->field_data[f].off++;
    return 0;
}

/* An absolute-form target: path and query from the URL, and its authority
 * (host and port) must be the one Host names. */
static int absolute_target(struct ks_request *r)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (parse_target_url(r->target, r->target_len, &u) != 0 ||
        !(u.field_set & (1 << UF_HOST)) || (u.field_set & (1 << UF_USERINFO))) {
        r->error = "malformed absolute-form target";
        return 400;
    }
    const char *h = r->target + u.field_data[UF_HOST].off;
    size_t hl = u.field_data[UF_HOST].len;
    if (r->host_value == NULL) {
        /* HTTP/1.0 without Host: the target's authority names the host
         * (RFC 9112 section 3.2.2), brackets and port included */
        const char *a = r->target + (h[-1] == '[' ? u.field_data[UF_HOST].off - 1 : u.field_data[UF_HOST].off);
        const char *end = r->target + r->target_len;
        const char *slash = memchr(a, '/', (size_t)(end - a));
        const char *query = memchr(a, '?', (size_t)(end - a));
        if (slash != NULL)
            end = slash;
        if (query != NULL && query < end)
            end = query;
        if (!normalise_host(r, a, (size_t)(end - a))) {
            r->error = "Host name longer than 255 bytes";
            return 400;
        }
        r->host_value = a;
        r->host_value_len = (size_t)(end - a);
    }
    const char *mine = r->host;
    size_t ml = strlen(mine);
    if (ml >= 2 && mine[0] == '[') {        /* the URL's host has no brackets */
        mine++;
        ml -= 2;
    }
    if (hl > 0 && h[hl - 1] == '.')
        hl--;
    if (hl != ml || strncasecmp(h, mine, hl) != 0) {
        r->error = "the host of the target differs from Host";
        return 400;
    }
    unsigned long dflt = scheme_is(r->target, r->target_len, "https") ? 443 : 80;
    unsigned long port = (u.field_set & (1 << UF_PORT)) ? u.port : dflt;
    if (r->host_value == NULL || port != host_port(r->host_value, r->host_value_len, dflt)) {
        r->error = "the port of the target differs from Host";
        return 400;
    }
    r->absolute_form = true;
    if (u.field_set & (1 << UF_PATH)) {
        r->path = r->target + u.field_data[UF_PATH].off;
        r->path_len = u.field_data[UF_PATH].len;
        r->origin = r->path;
        r->origin_len = (size_t)(r->target + r->target_len - r->path);
    } else if (u.field_set & (1 << UF_QUERY)) {
        /* "http://h?q": the path is "/" (RFC 3986 section 6.2.3); the
         * origin is "?q" and the proxy puts the "/" before it */
        r->path = "/";
        r->path_len = 1;
        r->origin = r->target + u.field_data[UF_QUERY].off - 1;
        r->origin_len = (size_t)(r->target + r->target_len - r->origin);
    } else {
        /* no path: "/", or for OPTIONS "*" (RFC 9112 section 3.2.4) */
        r->path = r->origin = r->parser.method == HTTP_OPTIONS ? "*" : "/";
        r->path_len = r->origin_len = 1;
    }
    r->query = NULL;
    r->query_len = 0;
    if (u.field_set & (1 << UF_QUERY)) {
        r->query = r->target + u.field_data[UF_QUERY].off;
        r->query_len = u.field_data[UF_QUERY].len;
    }
    return 0;
}

/* How many times word appears in v[0..n). */
static size_t count_in(const char *v, size_t n, const char *word)
{
    const char *end = v + n, *p;
    size_t count = 0, wl = strlen(word);
    while (wl > 0 && (p = memmem(v, (size_t)(end - v), word, wl)) != NULL) {
        count++;
        v = p + wl;
    }
    return count;
}

/* The framing and semantic rules http-parser leaves to us.  Returns 0 or
 * the status to answer (r->error says why). */
static int finish_head(struct ks_request *r, const char *via_name)
{
    http_parser *p = &r->parser;
    r->method = http_method_str((enum http_method)p->method);
    r->method_len = strlen(r->method);
    r->head_method = p->method == HTTP_HEAD;
    r->http_major = p->http_major;
    /* HTTP/1.2 and later minors are read, answered and forwarded as 1.1:
     * a recipient processes a higher minor version as the highest it
     * conforms to (RFC 9112 section 2.3) */
    r->http_minor = p->http_minor > 1 ? 1 : p->http_minor;
    r->keep_alive = http_should_keep_alive(p) != 0;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    r->has_content_length = (p->flags & F_CONTENTLENGTH) != 0;
    r->content_length = r->has_content_length ? p->content_length : 0;
    r->upgrade = p->upgrade != 0 && p->method != HTTP_CONNECT;
    r->path = r->origin = r->target;
    r->path_len = r->origin_len = r->target_len;
    const char *q = memchr(r->target, '?', r->target_len);
    if (q != NULL) {
        r->path_len = (size_t)(q - r->target);
        r->query = q + 1;
        r->query_len = r->target_len - r->path_len - 1;
    }
    if (r->http_major != 1) {
        r->error = "only HTTP/1.0 and HTTP/1.1 are supported";
        return 505;
    }
    if (p->method == HTTP_CONNECT) {
        r->error = "CONNECT is not supported";
        return 501;
    }
    if (p->method == HTTP_TRACE) {
        /* it would echo the request (cookies, credentials) back, and no
         * upstream needs it: nginx and Apache refuse it too */
        r->error = "TRACE is not supported";
        return 501;
    }

    size_t nhost = 0, nte = 0, nexpect = 0, passes = 0;
    const struct ks_header *te = NULL, *expect = NULL, *mf = NULL;
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct ks_header *h = &r->headers[i];
        if (ks_http_name_is(h->name, h->name_len, "host")) {
            if (nhost++ == 0) {
                r->host_value = h->value;
                r->host_value_len = h->value_len;
                trim(&r->host_value, &r->host_value_len);
            }
        } else if (ks_http_name_is(h->name, h->name_len, "transfer-encoding")) {
            nte++;
            te = h;
        } else if (ks_http_name_is(h->name, h->name_len, "expect")) {
            nexpect++;
            expect = h;
        } else if (p->method == HTTP_OPTIONS && ks_http_name_is(h->name, h->name_len, "max-forwards")) {
            mf = h;
        } else if (ks_http_name_is(h->name, h->name_len, "via")) {
            passes += count_in(h->value, h->value_len, via_name);
        }
    }
    r->max_forwards = mf != NULL ? max_forwards_of(mf->value, mf->value_len) : -1;
    if (nhost > 1) {
        r->error = "several Host headers";
        return 400;
    }
    if (nhost == 0 && r->http_minor >= 1) {
        r->error = "missing Host header";
        return 400;
    }
    if (r->host_value != NULL && !ks_http_valid_host(r->host_value, r->host_value_len)) {
        r->error = "malformed Host header";
        return 400;
    }
    if (r->host_value != NULL && !normalise_host(r, r->host_value, r->host_value_len)) {
        r->error = "Host name longer than 255 bytes";
        return 400;
    }
    if (passes >= KS_MAX_PASSES) {
        /* an upstream or a script's http.request that leads back here:
         * every pass would hold a worker until all are taken */
        r->error = "request loop: it came back through this gateway too often (Via)";
        return 508;
    }
    if (nte > 0) {
        if (r->http_minor == 0) {
            r->error = "Transfer-Encoding in an HTTP/1.0 request";
            return 400;
        }
        if (nte > 1 || !ks_http_te_is_chunked(te->value, te->value_len) || !r->chunked) {
            r->error = "Transfer-Encoding other than a single \"chunked\"";
            return 400;
        }
    }

    if (r->target[0] == '/') {
        /* origin-form */
    } else if (r->target_len == 1 && r->target[0] == '*') {
        if (p->method != HTTP_OPTIONS) {
            r->error = "\"*\" is a target for OPTIONS only";
            return 400;
        }
    } else if (scheme_is(r->target, r->target_len, "http") ||
               scheme_is(r->target, r->target_len, "https")) {
        int st = absolute_target(r);
        if (st != 0)
            return st;
    } else {
        r->error = "malformed request target";
        return 400;
    }

    /* a backslash is no path character (RFC 3986); some upstreams read
     * it as '/', which would let "/a/..\\b" leave a base path that the
     * route was chosen by */
    if (memchr(r->path, '\\', r->path_len) != NULL) {
        r->error = "backslash in the path";
        return 400;
    }

    if (nexpect > 0 && r->http_minor >= 1) {
        const char *v = expect->value;
        size_t n = expect->value_len;
        trim(&v, &n);
        if (nexpect > 1 || n != 12 || strncasecmp(v, "100-continue", 12) != 0) {
            r->error = "unsupported expectation";
            return 417;
        }
        r->expect_continue = true;
    }
    return 0;
}


static void head_begin(struct head_ctx *h, const struct ks_t_settings *s, struct ks_request *r,
                       struct ks_header *headers)
{
    memset(r, 0, offsetof(struct ks_request, parser));
    r->headers = headers;
    *h = (struct head_ctx){
        .r = r,
        .fields = { .h = headers, .max = (size_t)s->max_headers },
        .max_request_line = s->max_request_line,
        .max_header_bytes = s->max_header_bytes,
        .via_name = s->via_name,
    };
    /* The parser's own limit (80KB) must not cut in before ours.  It is
     * one setting for the whole process, so it is also the one of the
     * response heads (proxy.c, lua/http.c), which have their own limit. */
    uint64_t parser_max = s->max_request_line + s->max_header_bytes;
    if (s->max_response_header_bytes > parser_max)
        parser_max = s->max_response_header_bytes;
    http_parser_set_max_header_size((uint32_t)(parser_max + 4096));
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = h;
}

/* Take what buf[0..len) holds now (the bytes of earlier calls again,
 * plus new ones).  Returns -1 when the head needs more bytes, else the
 * status to answer (0: accepted, the head is r->head_len bytes). */
/* Does the line start with a method as nginx takes one (upper-case
 * letters, '-' and '_') and a space?  http-parser knows a fixed list; any
 * other such method is one keystoned does not implement (RFC 9110 9.1:
 * 501), where other bytes are a malformed request (400). */
static bool extension_method(const char *p, const char *end)
{
    const char *m = p;
    while (p < end && ((*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_'))
        p++;
    return p > m && p < end && *p == ' ';
}

static int head_step(struct head_ctx *h, const char *buf, size_t len)
{
    struct ks_request *r = h->r;
    enum http_errno e = HPE_OK;
    if (!h->parser_failed) {
        h->parsed += http_parser_execute(&r->parser, &head_settings, buf + h->parsed, len - h->parsed);
        e = HTTP_PARSER_ERRNO(&r->parser);
    }
    /* A request line asking for another HTTP version is answered 505,
     * whatever else the parser would say about it: it stops at the "I"
     * of "PRI * HTTP/2.0" (the HTTP/2 preface), and takes "GET /" as
     * HTTP/0.9 and goes on to read fields.  Judged once an LF is in. */
    if (!h->line_judged) {
        bool lf = memchr(buf + h->lf_scan, '\n', len - h->lf_scan) != NULL;
        h->lf_scan = len;
        /* The usual case needs no second look: once the parser has read
         * HTTP/1.x off the line, it is not one to answer 505 (that takes
         * another major version, or none). */
        bool parser_past_line = lf && !h->parser_failed &&
                                (e == HPE_OK || (e == HPE_PAUSED && h->head_done));
        if (parser_past_line && r->parser.http_major == 1) {
            h->line_judged = true;
        } else if (lf || e != HPE_OK || h->parser_failed) {
            enum ks_line_kind k = ks_http_request_line(buf, len);
            if (k == KS_LINE_UNSUPPORTED) {
                r->error = "only HTTP/1.0 and HTTP/1.1 are supported";
                return 505;
            }
            h->line_judged = k == KS_LINE_OTHER;
        }
    }
    /* the limits: a request line longer than max_request_line, or header
     * lines longer than max_header_bytes in all */
    size_t parsed = h->parsed;
    const char *line = buf;     /* past the empty lines a client may send first */
    while (line < buf + parsed && (*line == '\r' || *line == '\n'))
        line++;
    const char *eol = memchr(line, '\n', (size_t)(buf + parsed - line));
    /* (before its end, leading empty lines count too: they are no free lunch) */
    size_t line_len = eol == NULL ? parsed : (size_t)(eol - line) - (eol > line && eol[-1] == '\r');
    if (line_len > h->max_request_line) {
        r->error = "request line too long";
        return 414;
    }
    /* what follows the request line: the field lines, then at most the CR
     * of the empty line (its LF is left to the parser, paused at the end
     * of the head) */
    size_t fields_max = h->max_header_bytes + 1;
    if (eol != NULL && parsed - (size_t)(eol + 1 - buf) > fields_max) {
        r->error = "request header fields too large";
        return 431;
    }
    if (h->parser_failed || (e != HPE_OK && h->status == 0 && !h->head_done)) {
        /* the parser refused a line that may still turn out to ask for
         * another version: wait for its end, within the line limit */
        if (!h->parser_failed) {
            h->parser_failed = true;
            h->failed_with = e;
            r->error = http_errno_description(e);
        }
        if (h->line_judged && h->failed_with == HPE_INVALID_METHOD && extension_method(line, buf + len)) {
            r->error = "method not implemented";
            return 501;
        }
        if (h->line_judged)
            return 400;
        if (len > h->max_request_line) {
            r->error = "request line too long";
            return 414;
        }
        return -1;
    }
    if (h->head_done) {
        /* pausing in on_headers_complete stops *at* the head's final LF
         * (it was seen, so it is in the buffer): let the parser take it,
         * which moves it to the body (or the end) */
        http_parser_pause(&r->parser, 0);
        parsed += http_parser_execute(&r->parser, &head_settings, buf + parsed, 1);
        e = HTTP_PARSER_ERRNO(&r->parser);
        if (e == HPE_PAUSED)
            http_parser_pause(&r->parser, 0);
        r->head_len = parsed;
        r->parser.data = NULL;
        if (e != HPE_OK && e != HPE_PAUSED) {
            /* the parser refuses some framing only here (a
             * Transfer-Encoding other than chunked, say) */
            r->error = http_errno_description(e);
            return 400;
        }
        r->error = ks_http_check_head(buf, parsed);
        return r->error != NULL ? 400 : finish_head(r, h->via_name);
    }
    if (e != HPE_OK)
        return h->status;       /* set with r->error by the callback */
    return -1;
}

enum ks_head_result ks_http_parse_head(const struct ks_t_settings *s, const char *buf, size_t len,
                                       struct ks_request *r, struct ks_header *headers,
                                       int *status)
{
    struct head_ctx h;
    head_begin(&h, s, r, headers);
    r->start_us = 0;
    *status = head_step(&h, buf, len);
    r->parser.data = NULL;
    if (*status < 0) {
        *status = 0;
        return KS_HEAD_CLOSED;
    }
    return *status == 0 ? KS_HEAD_OK : KS_HEAD_ERROR;
}

enum ks_head_result ks_http_read_head(struct ks_conn *c, struct ks_request *r,
                                      struct ks_header *headers, int64_t idle_deadline_ms,
                                      int *status)
{
    const struct ks_t_settings *s = &c->w->table->settings;
    ks_conn_compact(c);
    struct head_ctx h;
    head_begin(&h, s, r, headers);
    *status = 0;

    /* the wait for the first byte is the keep-alive idle time, and a stop
     * request may end it; the rest of the head has read_header_timeout */
    if (c->len == 0) {
        enum ks_io_result io = ks_conn_fill(c, idle_deadline_ms, true);
        if (io != KS_IO_OK)
            return KS_HEAD_CLOSED;
    }
    r->start_us = ks_now_us();
    int64_t deadline = ks_now_ms() + s->read_header_timeout_ms;
    for (;;) {
        int st = head_step(&h, c->buf, c->len);
        if (st >= 0) {
            r->parser.data = NULL;
            if (h.head_done)
                c->start = r->head_len;
            *status = st;
            return st == 0 ? KS_HEAD_OK : KS_HEAD_ERROR;
        }
        if (c->len == c->cap) {
            *status = 431;
            r->error = "request header fields too large";
            return KS_HEAD_ERROR;
        }
        enum ks_io_result io = ks_conn_fill(c, deadline, false);
        if (io == KS_IO_TIMEOUT) {
            *status = 408;
            r->error = "request head not received in time";
            return KS_HEAD_ERROR;
        }
        if (io != KS_IO_OK) {
            /* nobody to answer, but a request that was begun: logged,
             * as nginx and HAProxy log it, with the 400 it would get */
            *status = 400;
            r->error = "client closed the connection in the middle of the request head";
            return KS_HEAD_CUT;
        }
    }
}
