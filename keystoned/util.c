/*
 * util.c: small helpers shared by every process (see util.h).
 *
 * Nothing here keeps state or allocates behind the caller's back: parsers
 * fill caller structs and caller error buffers, and the only functions that
 * return memory (ks_read_file, ks_path_join) say so.
 */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keystoned/util.h"

/* ---- time ------------------------------------------------------------ */

int64_t ks_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ks_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t ks_coarse_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ks_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ks_format_rfc3339(int64_t wall_ms, char *buf, size_t len)
{
    /* Floor division, so that times before the epoch still print a
     * millisecond field between 000 and 999. */
    int64_t secs = wall_ms / 1000, ms = wall_ms % 1000;
    struct tm tm;
    time_t t;

    if (len == 0)
        return;
    if (ms < 0) {
        ms += 1000;
        secs--;
    }
    t = (time_t)secs;
    if (gmtime_r(&t, &tm) == NULL) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)ms);
}

/* ---- typed values ------------------------------------------------------ */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int ks_parse_duration(const char *s, int64_t *ms)
{
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = {
        /* "ms" before "m": the longest unit that matches wins */
        { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
    };
    int64_t total = 0;
    const char *p = s;

    if (s == NULL || *s == '\0')
        return -1;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    /* Go-style sequences ("1m30s") are accepted: each component is a
     * decimal number with an optional fraction, then a unit. */
    while (*p != '\0') {
        int64_t whole = 0, frac = 0, scale = 1, part;
        size_t ndig = 0, nfrac = 0, i, ulen = 0;
        int64_t unit = 0;

        while (is_digit(*p)) {
            if (whole > (INT64_MAX - 9) / 10)
                return -1;
            whole = whole * 10 + (*p++ - '0');
            ndig++;
        }
        if (*p == '.') {
            p++;
            while (is_digit(*p)) {
                /* digits past the ninth cannot matter for milliseconds */
                if (nfrac < 9) {
                    frac = frac * 10 + (*p - '0');
                    scale *= 10;
                }
                nfrac++;
                p++;
            }
            if (nfrac == 0)
                return -1;
        }
        if (ndig == 0 && nfrac == 0)
            return -1;
        for (i = 0; i < KS_ARRAY_LEN(units); i++) {
            size_t n = strlen(units[i].name);

            if (strncmp(p, units[i].name, n) == 0) {
                unit = units[i].ms;
                ulen = n;
                break;
            }
        }
        if (unit == 0)
            return -1;
        p += ulen;
        if (whole > INT64_MAX / unit)
            return -1;
        part = whole * unit + frac * unit / scale;
        if (part > INT64_MAX - total)
            return -1;
        total += part;
    }
    *ms = total;
    return 0;
}

int ks_parse_size(const char *s, uint64_t *bytes)
{
    static const struct {
        const char *name;
        unsigned shift;
    } units[] = {
        { "", 0 }, { "b", 0 },
        { "k", 10 }, { "kb", 10 }, { "kib", 10 },
        { "m", 20 }, { "mb", 20 }, { "mib", 20 },
        { "g", 30 }, { "gb", 30 }, { "gib", 30 },
    };
    uint64_t n = 0;
    const char *p = s;
    size_t i;

    if (s == NULL || !is_digit(*p))
        return -1;
    while (is_digit(*p)) {
        if (n > (UINT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*p++ - '0');
    }
    for (i = 0; i < KS_ARRAY_LEN(units); i++) {
        if (strcasecmp(p, units[i].name) == 0) {
            if (units[i].shift > 0 && n > (UINT64_MAX >> units[i].shift))
                return -1;
            *bytes = n << units[i].shift;
            return 0;
        }
    }
    return -1;
}

static void addr_format(struct ks_addr *a)
{
    char host[INET6_ADDRSTRLEN];

    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;

        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(a->text, sizeof(a->text), "[%s]:%u", host, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;

        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(a->text, sizeof(a->text), "%s:%u", host, ntohs(s4->sin_port));
    }
}

/* Strict decimal port: 1..65535, digits only. */
static int parse_port(const char *s, size_t n, uint16_t *port)
{
    unsigned long v = 0;
    size_t i;

    if (n == 0 || n > 5)
        return -1;
    for (i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int ks_parse_addr(const char *s, struct ks_addr *out, char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon, *hs;
    size_t hlen;
    uint16_t port;
    bool v6 = false;

    memset(out, 0, sizeof(*out));
    if (s == NULL || *s == '\0') {
        snprintf(err, errlen, "empty address");
        return -1;
    }
    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL) {
            snprintf(err, errlen, "missing \"]\" after an IPv6 address");
            return -1;
        }
        hs = s + 1;
        hlen = (size_t)(close - hs);
        colon = close + 1;
        if (*colon != ':') {
            snprintf(err, errlen, "missing \":port\"");
            return -1;
        }
        v6 = true;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "missing \":port\"");
            return -1;
        }
        if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
            snprintf(err, errlen, "an IPv6 address needs brackets, as in \"[::1]:8080\"");
            return -1;
        }
        hs = s;
        hlen = (size_t)(colon - s);
    }
    if (parse_port(colon + 1, strlen(colon + 1), &port) < 0) {
        snprintf(err, errlen, "the port must be a number from 1 to 65535");
        return -1;
    }
    if (hlen >= sizeof(host)) {
        snprintf(err, errlen, "the host must be a numeric IP address");
        return -1;
    }
    memcpy(host, hs, hlen);
    host[hlen] = '\0';

    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;

        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) {
            snprintf(err, errlen, "\"%s\" is not a numeric IPv6 address", host);
            return -1;
        }
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        out->len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;

        if (hlen == 0 || strcmp(host, "*") == 0) {
            s4->sin_addr.s_addr = htonl(INADDR_ANY);
        } else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) {
            snprintf(err, errlen, "the host must be a numeric IP address, got \"%s\"", host);
            return -1;
        }
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        out->len = sizeof(*s4);
    }
    addr_format(out);
    return 0;
}

static bool is_hostchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
           c == '.' || c == '-' || c == '_';
}

int ks_parse_url(const char *s, struct ks_url *out, char *err, size_t errlen)
{
    const char *p, *sep, *hs, *he;
    bool v6 = false;
    size_t n;

    memset(out, 0, sizeof(*out));
    if (s == NULL || (sep = strstr(s, "://")) == NULL) {
        snprintf(err, errlen, "missing \"http://\"");
        return -1;
    }
    n = (size_t)(sep - s);
    if (n == 4 && strncasecmp(s, "http", 4) == 0) {
        strcpy(out->scheme, "http");
        out->port = 80;
    } else if (n == 5 && strncasecmp(s, "https", 5) == 0) {
        strcpy(out->scheme, "https");
        out->port = 443;
    } else {
        snprintf(err, errlen, "unsupported scheme \"%.*s\"", (int)(n > 16 ? 16 : n), s);
        return -1;
    }
    p = sep + 3;
    /* userinfo first: the ':' of "user:password@" is not the port's */
    if (memchr(p, '@', strcspn(p, "/?#")) != NULL) {
        snprintf(err, errlen, "user names in URLs are not supported");
        return -1;
    }
    if (*p == '[') {
        struct in6_addr a6;

        hs = p + 1;
        he = strchr(hs, ']');
        if (he == NULL) {
            snprintf(err, errlen, "missing \"]\" after an IPv6 address");
            return -1;
        }
        p = he + 1;
        v6 = true;
        n = (size_t)(he - hs);
        if (n >= sizeof(out->host)) {
            snprintf(err, errlen, "the host is too long");
            return -1;
        }
        memcpy(out->host, hs, n);
        out->host[n] = '\0';
        if (inet_pton(AF_INET6, out->host, &a6) != 1) {
            snprintf(err, errlen, "\"%s\" is not an IPv6 address", out->host);
            return -1;
        }
    } else {
        hs = p;
        while (is_hostchar(*p))
            p++;
        n = (size_t)(p - hs);
        if (n == 0) {
            snprintf(err, errlen, "missing host");
            return -1;
        }
        if (n >= sizeof(out->host)) {
            snprintf(err, errlen, "the host is too long");
            return -1;
        }
        memcpy(out->host, hs, n);
        out->host[n] = '\0';
    }
    if (*p == ':') {
        const char *ps = ++p;

        while (is_digit(*p))
            p++;
        if (parse_port(ps, (size_t)(p - ps), &out->port) < 0) {
            snprintf(err, errlen, "the port must be a number from 1 to 65535");
            return -1;
        }
    }
    if (*p == '/')
        p++;
    if (*p != '\0') {
        if (*p == '?' || *p == '#')
            snprintf(err, errlen, "a query or fragment is not supported");
        else if (p[-1] == '/')
            snprintf(err, errlen, "a path other than \"/\" is not supported");
        else
            snprintf(err, errlen, "unexpected character '%c' after the host", *p);
        return -1;
    }
    snprintf(out->hostport, sizeof(out->hostport), v6 ? "[%s]:%u" : "%s:%u",
             out->host, out->port);
    return 0;
}

int ks_resolve_url(const struct ks_url *u, struct ks_addr *out, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char port[8];
    int rc;

    memset(out, 0, sizeof(*out));
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* No AI_ADDRCONFIG: on a host with only loopback configured it would
     * refuse to resolve "localhost", which is exactly what tests use. */
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%u", u->port);
    rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", u->host,
                 rc != 0 ? gai_strerror(rc) : "no address");
        if (res != NULL)
            freeaddrinfo(res);
        return -1;
    }
    if (res->ai_addrlen > sizeof(out->ss)) {
        freeaddrinfo(res);
        snprintf(err, errlen, "cannot resolve \"%s\": address too long", u->host);
        return -1;
    }
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    addr_format(out);
    return 0;
}

/* ---- strings ---------------------------------------------------------- */

size_t ks_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);

    if (size > 0) {
        size_t c = n < size - 1 ? n : size - 1;

        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int ks_edit_distance(const char *a, const char *b, int cap)
{
    size_t la = strlen(a), lb = strlen(b), i, j;
    int *row, result;

    if (cap < 0)
        cap = 0;
    /* The length difference is a lower bound: most candidates stop here. */
    if ((la > lb ? la - lb : lb - la) > (size_t)cap)
        return cap + 1;
    row = malloc((lb + 1) * sizeof(*row));
    if (row == NULL)
        return cap + 1;
    for (j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (i = 1; i <= la; i++) {
        int diag = row[0], best;

        row[0] = (int)i;
        best = row[0];
        for (j = 1; j <= lb; j++) {
            int up = row[j];
            int v = diag + (a[i - 1] != b[j - 1]);

            if (up + 1 < v)
                v = up + 1;
            if (row[j - 1] + 1 < v)
                v = row[j - 1] + 1;
            row[j] = v;
            diag = up;
            if (v < best)
                best = v;
        }
        if (best > cap) {
            free(row);
            return cap + 1;
        }
    }
    result = row[lb] > cap ? cap + 1 : row[lb];
    free(row);
    return result;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len, i;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

int ks_json_escape(char *buf, size_t cap, size_t *pos, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, p = *pos;

    if (cap == 0)
        return -1;
    if (p >= cap) {
        buf[cap - 1] = '\0';
        *pos = cap - 1;
        return -1;
    }
    while (i < n) {
        char esc[8];
        const char *out = esc;
        size_t olen, step = 1;

        switch (u[i]) {
        case '"':  out = "\\\""; olen = 2; break;
        case '\\': out = "\\\\"; olen = 2; break;
        case '\n': out = "\\n"; olen = 2; break;
        case '\r': out = "\\r"; olen = 2; break;
        case '\t': out = "\\t"; olen = 2; break;
        case '\b': out = "\\b"; olen = 2; break;
        case '\f': out = "\\f"; olen = 2; break;
        default:
            if (u[i] < 0x20 || u[i] == 0x7f) {
                olen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", u[i]);
            } else if (u[i] < 0x80) {
                out = s + i;
                olen = 1;
            } else if ((step = utf8_len(u + i, n - i)) > 0) {
                out = s + i;
                olen = step;
            } else {
                /* Invalid UTF-8 would make the whole line invalid JSON:
                 * keep the byte visible as its Latin-1 code point. */
                step = 1;
                olen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", u[i]);
            }
        }
        /* Never write half an escape: stop before it instead. */
        if (p + olen >= cap) {
            buf[p] = '\0';
            *pos = p;
            return -1;
        }
        memcpy(buf + p, out, olen);
        p += olen;
        i += step;
    }
    buf[p] = '\0';
    *pos = p;
    return 0;
}

size_t ks_fmt_dec(char *dst, uint64_t v)
{
    /* two digits a step, from the right: half the divisions (it formats
     * every Content-Length the worker sends) */
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    size_t n = 1;
    for (uint64_t t = v; t >= 10; t /= 10)
        n++;
    char *p = dst + n;
    while (v >= 100) {
        p -= 2;
        memcpy(p, pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10)
        memcpy(p - 2, pairs + 2 * v, 2);
    else
        p[-1] = (char)('0' + v);
    return n;
}

size_t ks_fmt_hex(char *dst, uint64_t v, unsigned width)
{
    static const char digits[] = "0123456789abcdef";
    /* the digits v needs, or width when more (request ids: always 16) */
    size_t n = width >= 16 ? 16 : width > 0 ? width : 1;
    while (n < 16 && v >> (4 * n) != 0)
        n++;
    for (size_t i = n; i-- > 0; v >>= 4)
        dst[i] = digits[v & 0xf];
    return n;
}

int ks_appendf(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (cap == 0)
        return -1;
    if (*pos >= cap) {
        buf[cap - 1] = '\0';
        *pos = cap - 1;
        return -1;
    }
    va_start(ap, fmt);
    n = vsnprintf(buf + *pos, cap - *pos, fmt, ap);
    va_end(ap);
    if (n < 0) {
        buf[*pos] = '\0';
        return -1;
    }
    if ((size_t)n >= cap - *pos) {
        *pos = cap - 1;
        return -1;
    }
    *pos += (size_t)n;
    return 0;
}

uint64_t ks_hash_strings(const char *const *parts, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)(parts[i] ? parts[i] : "");

        if (i > 0)
            h = (h ^ 0) * 0x100000001b3ULL;
        for (; *p != '\0'; p++)
            h = (h ^ *p) * 0x100000001b3ULL;
    }
    /* 0 marks an empty slot in shared-memory hash tables. */
    return h != 0 ? h : 1;
}

/* ---- descriptors ---------------------------------------------------- */

int ks_set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0)
        return -1;
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl) < 0 ? -1 : 0;
}

int ks_set_cloexec(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFD);

    if (fl < 0)
        return -1;
    fl = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, fl) < 0 ? -1 : 0;
}

int ks_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

char *ks_read_file(const char *path, size_t max, size_t *len_out, char *err, size_t errlen)
{
    struct stat st;
    size_t cap, len = 0;
    char *buf;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) < 0) {
        saved = errno;
        close(fd);
        snprintf(err, errlen, "cannot stat \"%s\": %s", path, strerror(saved));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "\"%s\" is not a regular file", path);
        return NULL;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        snprintf(err, errlen, "\"%s\" is too large (%lld bytes, the limit is %zu)",
                 path, (long long)st.st_size, max);
        return NULL;
    }
    /* The size may change under us: read until EOF, never past max. */
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap);
    if (buf == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory reading \"%s\"", path);
        return NULL;
    }
    for (;;) {
        ssize_t n;

        if (len + 1 >= cap) {
            size_t ncap = cap * 2;
            char *nb;

            if (ncap > max + 2)
                ncap = max + 2;
            if (ncap <= cap) {
                free(buf);
                close(fd);
                snprintf(err, errlen, "\"%s\" is too large (the limit is %zu bytes)", path, max);
                return NULL;
            }
            nb = realloc(buf, ncap);
            if (nb == NULL) {
                free(buf);
                close(fd);
                snprintf(err, errlen, "out of memory reading \"%s\"", path);
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        n = read(fd, buf + len, cap - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            saved = errno;
            free(buf);
            close(fd);
            snprintf(err, errlen, "cannot read \"%s\": %s", path, strerror(saved));
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            free(buf);
            close(fd);
            snprintf(err, errlen, "\"%s\" is too large (the limit is %zu bytes)", path, max);
            return NULL;
        }
    }
    close(fd);
    buf[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    return buf;
}

int ks_open_new(const char *path, mode_t mode)
{
    if (unlink(path) < 0 && errno != ENOENT)
        return -1;
    return open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
}

char *ks_path_join(const char *dir, const char *path)
{
    size_t dl, pl;
    char *out;

    if (path[0] == '/' || dir == NULL || dir[0] == '\0')
        return strdup(path);
    dl = strlen(dir);
    pl = strlen(path);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    /* "./x" is the same file as "x": keep logged paths readable. */
    while (path[0] == '.' && path[1] == '/') {
        path += 2;
        pl -= 2;
        while (path[0] == '/') {
            path++;
            pl--;
        }
    }
    out = malloc(dl + 1 + pl + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, dir, dl);
    if (!(dl == 1 && dir[0] == '/'))
        out[dl++] = '/';
    memcpy(out + dl, path, pl);
    out[dl + pl] = '\0';
    return out;
}

/* ---- processes --------------------------------------------------------- */

/* The fields of /proc/PID/stat after "pid (comm) ", in buf; NULL when it
 * cannot be read.  comm may hold spaces and parentheses, so the fields
 * start after the last ')'. */
static const char *proc_stat_fields(pid_t pid, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' ? p + 2 : NULL;
}

bool ks_proc_exited(pid_t pid)
{
    char buf[1024];
    const char *f = proc_stat_fields(pid, buf, sizeof(buf));
    return f != NULL && (f[0] == 'Z' || f[0] == 'X');
}

bool ks_proc_stopped(pid_t pid)
{
    char buf[1024];
    const char *f = proc_stat_fields(pid, buf, sizeof(buf));
    return f != NULL && (f[0] == 'T' || f[0] == 't');
}

uint64_t ks_proc_start_ticks(pid_t pid)
{
    char buf[1024];
    const char *p = proc_stat_fields(pid, buf, sizeof(buf));
    if (p == NULL)
        return 0;
    /* the state is field 3, starttime field 22 */
    for (int field = 3; field < 22; field++) {   /* p is at field number field */
        p = strchr(p, ' ');
        if (p == NULL)
            return 0;
        p++;
    }
    char *end;
    unsigned long long ticks = strtoull(p, &end, 10);
    return end == p ? 0 : (uint64_t)ticks;
}
