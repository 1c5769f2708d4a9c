/*
 * http.c: http.request{method, url, headers, body, timeout}, a blocking
 * outbound HTTP/1.1 call (plain http) under one deadline covering name
 * resolution, connect, send and the whole response.  Natural in a prefork
 * worker: the worker serves nobody else meanwhile, and the time spent
 * waiting counts neither against the Lua timeout nor for the watchdog.
 *
 * The response is read whole into the worker's scratch buffer (at most
 * the tenant's Lua memory limit), parsed by http-parser once to find its
 * end while reading and once more, after the socket is closed, to hand
 * status, headers and body to Lua.
 */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "lua/api.h"
#include "lua/reqctx.h"
#include "worker/conn.h"
#include "worker/http.h"

#define DEFAULT_TIMEOUT_MS 5000
#define MAX_TIMEOUT_MS 60000
#define MAX_HEADERS 64

struct outbound {
    const char *method;
    char host[256];
    uint16_t port;
    char hostport[300];
    const char *path;               /* path and query, from the URL */
    size_t path_len;
    int64_t deadline_ms;
    struct ks_worker *w;
    int client_fd;                  /* looked at while the answer is awaited */
};

/* ---- resolution, with the deadline ----------------------------------------------- */

/* Numeric hosts directly; names through getaddrinfo_a so that a slow
 * resolver cannot outlast the deadline.  A lookup still running at the
 * deadline is cancelled, or if it cannot be, abandoned (its request block
 * stays allocated: the resolver thread still writes into it). */
static int resolve(const struct outbound *o, struct sockaddr_storage *ss, socklen_t *len,
                   char *err, size_t errlen)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, o->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(o->port);
        *len = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, o->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(o->port);
        *len = sizeof(*sin6);
        return 0;
    }
    struct lookup {
        struct gaicb cb;
        struct addrinfo hints;
        char name[256];
    } *lk = calloc(1, sizeof(*lk));
    if (lk == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ks_strlcpy(lk->name, o->host, sizeof(lk->name));
    lk->hints.ai_socktype = SOCK_STREAM;
    lk->cb.ar_name = lk->name;
    lk->cb.ar_request = &lk->hints;
    struct gaicb *list[1] = { &lk->cb };
    if (getaddrinfo_a(GAI_NOWAIT, list, 1, NULL) != 0) {
        snprintf(err, errlen, "cannot resolve %s", o->host);
        free(lk);
        return -1;
    }
    for (;;) {
        int rc = gai_error(&lk->cb);
        if (rc != EAI_INPROGRESS)
            break;
        int64_t left = o->deadline_ms - ks_now_ms();
        if (left <= 0) {
            if (gai_cancel(&lk->cb) == EAI_CANCELED || gai_error(&lk->cb) != EAI_INPROGRESS) {
                if (gai_error(&lk->cb) == 0)
                    freeaddrinfo(lk->cb.ar_result);
                free(lk);
            }
            snprintf(err, errlen, "timeout resolving %s", o->host);
            return -1;
        }
        struct timespec ts = { .tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000 };
        const struct gaicb *wait[1] = { &lk->cb };
        gai_suspend(wait, 1, &ts);
    }
    int rc = gai_error(&lk->cb);
    if (rc != 0 || lk->cb.ar_result == NULL) {
        snprintf(err, errlen, "cannot resolve %s: %s", o->host, gai_strerror(rc));
        free(lk);
        return -1;
    }
    struct addrinfo *ai = lk->cb.ar_result;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    if (ss->ss_family == AF_INET)
        sin->sin_port = htons(o->port);
    else if (ss->ss_family == AF_INET6)
        sin6->sin6_port = htons(o->port);
    freeaddrinfo(ai);
    free(lk);
    return 0;
}

/* ---- the exchange -------------------------------------------------------------- */

/* An interim response (100 Continue, 103 Early Hints, ...) comes before
 * the final one, on the same request (RFC 9110 15.2): http-parser sees
 * it as a whole message without a body and goes on with the next one.
 * 101 is not interim: the connection is then no longer HTTP, and the 101
 * is what the script gets. */
static bool interim(const http_parser *p)
{
    return p->status_code >= 100 && p->status_code < 200 && p->status_code != 101;
}

static int on_complete_mark(http_parser *p)
{
    if (!interim(p))
        *(bool *)p->data = true;
    return 0;
}

static int skip_body_for_head(http_parser *p)
{
    (void)p;
    return 1;
}

/* Connect, send req, read the response into the scratch buffer.  Returns
 * the response length, or -1 with a reason, or CLIENT_LEFT. */
#define CLIENT_LEFT (-2)
static ssize_t exchange(struct outbound *o, const char *req, size_t reqlen, const char *body,
                        size_t bodylen, struct ks_lua_scratch *sc, size_t max, char *err,
                        size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (resolve(o, &ss, &sl, err, errlen) < 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ssize_t result = -1;
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect to %s: %s", o->hostport, strerror(errno));
        goto out;
    }
    enum ks_io_result io = ks_wait_fd(o->w, fd, POLLOUT, o->deadline_ms, false);
    int soerr = 0;
    socklen_t el = sizeof(soerr);
    if (io != KS_IO_OK || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0 || soerr != 0) {
        snprintf(err, errlen, "connect to %s: %s", o->hostport,
                 io == KS_IO_TIMEOUT ? "timeout" : strerror(soerr ? soerr : errno));
        goto out;
    }
    struct iovec iov[2] = {
        { .iov_base = (void *)req, .iov_len = reqlen },
        { .iov_base = (void *)body, .iov_len = bodylen },
    };
    size_t written;
    io = ks_write_all_iov(o->w, fd, iov, 2, o->deadline_ms, &written);
    if (io != KS_IO_OK) {
        snprintf(err, errlen, "sending to %s: %s", o->hostport,
                 io == KS_IO_TIMEOUT ? "timeout" : strerror(errno));
        goto out;
    }
    bool done = false;
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &done;
    http_parser_settings s = { .on_message_complete = on_complete_mark };
    if (strcmp(o->method, "HEAD") == 0)
        s.on_headers_complete = skip_body_for_head;
    size_t len = 0;
    while (!done) {
        if (len == sc->cap) {
            size_t nc = sc->cap ? 2 * sc->cap : 65536;
            if (sc->cap >= max) {
                snprintf(err, errlen, "the response from %s is larger than %zu bytes", o->hostport, max);
                goto out;
            }
            if (nc > max)
                nc = max;
            char *nb = realloc(sc->buf, nc);
            if (nb == NULL) {
                snprintf(err, errlen, "out of memory");
                goto out;
            }
            sc->buf = nb;
            sc->cap = nc;
        }
        size_t got = 0;
        bool client_left;
        io = ks_read_watching(o->w, fd, o->client_fd, sc->buf + len, sc->cap - len, o->deadline_ms, &got,
                              &client_left);
        if (client_left) {
            result = CLIENT_LEFT;
            goto out;
        }
        if (io == KS_IO_EOF) {
            http_parser_execute(&p, &s, NULL, 0);   /* a body ending at close ends here */
            if (!done) {
                snprintf(err, errlen, "%s closed the connection before the response was complete",
                         o->hostport);
                goto out;
            }
            break;
        }
        if (io != KS_IO_OK) {
            snprintf(err, errlen, "reading from %s: %s", o->hostport,
                     io == KS_IO_TIMEOUT ? "timeout" : strerror(errno));
            goto out;
        }
        size_t n = http_parser_execute(&p, &s, sc->buf + len, got);
        len += got;
        if (!done && (n != got || HTTP_PARSER_ERRNO(&p) != HPE_OK)) {
            snprintf(err, errlen, "bad response from %s: %s", o->hostport,
                     http_errno_description(HTTP_PARSER_ERRNO(&p)));
            goto out;
        }
    }
    result = (ssize_t)len;
out:
    close(fd);
    return result;
}

/* ---- handing the response to Lua ------------------------------------------------- */

struct to_lua {
    lua_State *L;
    int headers;                    /* stack index of the headers table */
    const char *field;
    size_t field_len;
    char *body_w;                   /* body compacted to the front of the buffer */
    bool head;
    bool in_trailers;               /* past the head: fields now are trailers, dropped */
};

static int tl_field(http_parser *p, const char *at, size_t len)
{
    struct to_lua *t = p->data;
    if (t->in_trailers)
        return 0;
    t->field = at;
    t->field_len = len;
    return 0;
}

static int tl_value(http_parser *p, const char *at, size_t len)
{
    struct to_lua *t = p->data;
    if (t->in_trailers)
        return 0;
    lua_State *L = t->L;
    luaL_Buffer b;
    char *d = luaL_buffinitsize(L, &b, t->field_len);
    for (size_t i = 0; i < t->field_len; i++)
        d[i] = (char)(t->field[i] >= 'A' && t->field[i] <= 'Z' ? t->field[i] + 32 : t->field[i]);
    luaL_pushresultsize(&b, t->field_len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, t->headers) == LUA_TSTRING) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, at, len);
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushlstring(L, at, len);
    }
    lua_rawset(L, t->headers);
    return 0;
}

static int tl_headers_done(http_parser *p)
{
    struct to_lua *t = p->data;
    if (interim(p)) {
        /* its fields are not the response's: start again with the next head */
        lua_newtable(t->L);
        lua_replace(t->L, t->headers);
        return 0;
    }
    t->in_trailers = true;
    return t->head ? 1 : 0;
}

/* The final response ends here: stop, whatever the buffer holds after. */
static int tl_complete(http_parser *p)
{
    return interim(p) ? 0 : 1;
}

static int tl_body(http_parser *p, const char *at, size_t len)
{
    struct to_lua *t = p->data;
    /* the parser is past these bytes: moving them back is safe */
    memmove(t->body_w, at, len);
    t->body_w += len;
    return 0;
}

static void push_response(lua_State *L, char *buf, size_t len, bool head)
{
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    struct to_lua t = { .L = L, .headers = lua_gettop(L), .head = head, .body_w = buf };
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &t;
    http_parser_settings s = {
        .on_header_field = tl_field,
        .on_header_value = tl_value,
        .on_headers_complete = tl_headers_done,
        .on_body = tl_body,
        .on_message_complete = tl_complete,
    };
    /* headers are copied into Lua as they come, so the body can then be
     * moved to the front of the buffer, behind where the parser reads */
    http_parser_execute(&p, &s, buf, len);
    lua_setfield(L, -2, "headers");
    lua_pushinteger(L, p.status_code);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, buf, (size_t)(t.body_w - buf));
    lua_setfield(L, -2, "body");
}

/* ---- http.request ---------------------------------------------------------------- */

static bool token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || *s == '-'))
            return false;
    return true;
}

static int fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static int l_request(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE | KS_LUA_HANDLER, "http.request");
    struct ks_lua_req *q = lx->req;
    if (lua_type(L, 1) != LUA_TTABLE)
        return luaL_error(L, "http.request: takes a table: http.request{url = \"http://...\", ...}");
    lua_settop(L, 1);
    struct outbound o = { .w = q->x->w };
    char err[512];

    /* each option's type, with a message naming it */
    static const struct { const char *name; int type; } opts[] = {
        { "method", LUA_TSTRING }, { "url", LUA_TSTRING }, { "body", LUA_TSTRING },
        { "headers", LUA_TTABLE },
    };
    for (size_t i = 0; i < KS_ARRAY_LEN(opts); i++) {
        int t = lua_getfield(L, 1, opts[i].name);
        if (t != LUA_TNIL && t != opts[i].type && !(opts[i].type == LUA_TSTRING && t == LUA_TNUMBER))
            return luaL_error(L, "http.request: %s must be a %s, not a %s", opts[i].name,
                              lua_typename(L, opts[i].type), luaL_typename(L, -1));
        if (t == LUA_TNIL && strcmp(opts[i].name, "url") == 0)
            return luaL_error(L, "http.request: url is missing");
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "method");
    o.method = luaL_optstring(L, -1, "GET");
    if (!token(o.method) || strlen(o.method) > 16)
        return luaL_error(L, "http.request: bad method \"%s\" (capital letters)", o.method);
    lua_getfield(L, 1, "url");
    const char *url = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "body");
    size_t bodylen = 0;
    const char *body = luaL_optlstring(L, -1, NULL, &bodylen);
    lua_getfield(L, 1, "timeout");
    int64_t timeout = lua_isnil(L, -1) ? DEFAULT_TIMEOUT_MS : ks_lua_duration(L, -1);
    if (timeout <= 0 || timeout > MAX_TIMEOUT_MS)
        return luaL_error(L, "http.request: timeout must be a duration up to 60s");
    lua_getfield(L, 1, "headers");      /* index 6 */
    if (!lua_isnil(L, 6))
        luaL_checktype(L, 6, LUA_TTABLE);

    if (strncmp(url, "https://", 8) == 0)
        return fail(L, "http.request: https is not supported (plain http only)");
    if (strncmp(url, "http://", 7) != 0)
        return fail(L, "http.request: the url must start with http://");
    const char *hp = url + 7;
    size_t hl = strcspn(hp, "/?#");
    o.path = hp + hl;
    o.path_len = strcspn(o.path, "#");
    char base[320];
    if (hl == 0 || hl >= 300)
        return fail(L, "http.request: bad host in the url");
    snprintf(base, sizeof(base), "http://%.*s", (int)hl, hp);
    struct ks_url u;
    if (ks_parse_url(base, &u, err, sizeof(err)) < 0)
        return fail(L, err);
    ks_strlcpy(o.host, u.host, sizeof(o.host));
    o.port = u.port;
    ks_strlcpy(o.hostport, u.hostport, sizeof(o.hostport));
    for (size_t i = 0; i < o.path_len; i++)
        if ((unsigned char)o.path[i] <= 0x20 || o.path[i] == 0x7f)
            return fail(L, "http.request: spaces or control characters in the url");

    /* the request head, in a Lua userdata (it counts against the memory
     * limit and is collected like the rest): sized in a first pass over
     * the headers, written in a second */
    const struct ks_request *r = q->x->r;
    const char *via_name = q->x->w->table->settings.via_name;
    size_t total = strlen(o.method) + o.path_len + strlen(o.hostport) + strlen(via_name) + 128;
    for (size_t i = 0; i < r->nheaders; i++)
        if (ks_http_name_is(r->headers[i].name, r->headers[i].name_len, "via"))
            total += r->headers[i].value_len + 8;
    int nh = 0;
    if (lua_type(L, 6) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, 6) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                return luaL_error(L, "http.request: headers must be name = value strings");
            size_t nl, vl;
            const char *name = lua_tolstring(L, -2, &nl);
            lua_pushvalue(L, -1);
            const char *value = lua_tolstring(L, -1, &vl);
            if (nl > 256 || !ks_http_is_token(name, nl))
                return luaL_error(L, "http.request: bad header name");
            if (!ks_http_is_value(value, vl))
                return luaL_error(L, "http.request: control characters in header %s", name);
            if (nl == 4 && strncasecmp(name, "host", 4) == 0)
                return luaL_error(L, "http.request: Host comes from the url");
            /* the framing and the connection are ours, as for req:set_header
             * (an Upgrade would turn the answer into a 101 and another
             * protocol); a Via may be added, ours is appended all the same */
            if (ks_http_hop_by_hop(name, nl))
                return luaL_error(L, "http.request: %s is set by keystoned", name);
            if (++nh > MAX_HEADERS)
                return luaL_error(L, "http.request: more than %d headers", MAX_HEADERS);
            total += nl + vl + 4;
            lua_pop(L, 2);
        }
    }
    char *req = lua_newuserdata(L, total);
    size_t pos = 0;
    int rc = ks_appendf(req, total, &pos, "%s %s%.*s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n",
                        o.method, o.path_len == 0 || o.path[0] == '?' ? "/" : "", (int)o.path_len,
                        o.path, o.hostport);
    if (lua_type(L, 6) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, 6) != 0) {
            lua_pushvalue(L, -1);
            rc |= ks_appendf(req, total, &pos, "%s: %s\r\n", lua_tostring(L, -3), lua_tostring(L, -1));
            lua_pop(L, 2);
        }
    }
    /* the Via of the request being handled, and ours: a script calling
     * its own gateway (itself, at worst) is a pass the next one counts */
    for (size_t i = 0; i < r->nheaders; i++)
        if (ks_http_name_is(r->headers[i].name, r->headers[i].name_len, "via"))
            rc |= ks_appendf(req, total, &pos, "Via: %.*s\r\n", (int)r->headers[i].value_len,
                             r->headers[i].value);
    rc |= ks_appendf(req, total, &pos, "Via: 1.1 %s\r\n", via_name);
    if (body != NULL || strcmp(o.method, "POST") == 0 || strcmp(o.method, "PUT") == 0)
        rc |= ks_appendf(req, total, &pos, "Content-Length: %zu\r\n", bodylen);
    rc |= ks_appendf(req, total, &pos, "\r\n");
    if (rc < 0)
        return luaL_error(L, "http.request: request head too large");
    size_t reqlen = pos;

    struct ks_lua_pause pz;
    ks_lua_pause(lx, &pz);
    o.deadline_ms = ks_now_ms() + timeout;
    o.client_fd = q->x->c != NULL ? q->x->c->fd : -1;
    size_t max = lx->mem.limit > 65536 ? lx->mem.limit : 65536;
    ssize_t n = exchange(&o, req, reqlen, body, bodylen, q->scratch, max, err, sizeof(err));
    ks_lua_resume(lx, &pz);
    if (n == CLIENT_LEFT)   /* nobody to answer: the request ends here */
        return ks_lua_abort(L, q, -1, "the client closed the connection while http.request waited");
    if (n < 0)
        return fail(L, err);
    push_response(L, q->scratch->buf, (size_t)n, strcmp(o.method, "HEAD") == 0);
    return 1;
}

int ks_lua_open_http(lua_State *L)
{
    static const luaL_Reg fns[] = { { "request", l_request }, { NULL, NULL } };
    luaL_newlib(L, fns);
    lua_setglobal(L, "http");
    return 0;
}
