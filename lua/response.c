/*
 * response.c: the res object and the writing of Lua-made responses.
 *
 * A handler's output is buffered up to KS_LUA_STREAM_AT bytes and sent
 * with Content-Length when the handler returns; past that the head goes
 * out with chunked framing (HTTP/1.0: until close) and every further
 * write is sent at once.  In a response hook res edits the upstream's
 * head instead (status and header edits applied by the proxy).
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keystoned/util.h"
#include "lua/api.h"
#include "lua/reqctx.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/out.h"
#include "worker/respond.h"

#define HEAD_MAX 16384
/* what the script's headers may take of it: the rest is for the status
 * line and keystoned's own fields */
#define SCRIPT_HEADERS_MAX (HEAD_MAX - 1024)
#define JSON_ENCODE_KEY "ks.json_encode"

static struct ks_lua_req *cur(lua_State *L)
{
    return ks_lua_current(L, KS_LUA_RES_CLASS, ks_lua_of(L)->res_self);
}

bool ks_lua_res_open(const struct ks_lua_req *q)
{
    return !q->proxied && !q->res.started;
}

/* 1xx, 204 and 304 have no body by their framing (RFC 9112 6.3); 205
 * has an empty one (RFC 9110 15.3.6): Content-Length: 0, whatever the
 * script writes. */
static bool no_body_status(int status)
{
    return status < 200 || status == 204 || status == 304;
}

static bool no_content_status(int status)
{
    return no_body_status(status) || status == 205;
}

static bool is_head(const struct ks_lua_req *q)
{
    return q->x->r->head_method;
}

static int64_t send_deadline(const struct ks_lua_req *q)
{
    return ks_now_ms() + q->x->w->table->settings.send_timeout_ms;
}

static int writev_client(struct ks_lua_req *q, struct iovec *iov, int n)
{
    return ks_conn_writev(q->x->c, iov, n, send_deadline(q)) == KS_IO_OK ? 0 : -1;
}

/* Write the head: Content-Length content_length, or (stream) chunked /
 * until close. */
static int send_head(struct ks_lua_req *q, bool stream, size_t content_length, const char *body,
                     size_t body_len)
{
    struct ks_lua_resp *res = &q->res;
    struct ks_exchange *x = q->x;
    int status = res->status > 0 ? res->status : 200;
    bool nobody = no_body_status(status);
    bool empty = status == 205;
    char head[HEAD_MAX];
    struct ks_out o = { .buf = head, .cap = sizeof(head) };
    const char *reason = ks_status_reason(status);
    ks_out_status_line(&o, status, reason, strlen(reason));
    /* the script's Server, Date and Content-Type replace ours */
    bool has_type = false, has_server = false, has_date = false;
    for (size_t i = 0; i < res->nheaders; i++) {
        const char *n = res->headers[i].name;
        size_t nl = res->headers[i].name_len;
        has_type |= nl == 12 && strncasecmp(n, "content-type", 12) == 0;
        has_server |= nl == 6 && strncasecmp(n, "server", 6) == 0;
        has_date |= nl == 4 && strncasecmp(n, "date", 4) == 0;
    }
    if (!has_server)
        ks_out_str(&o, "Server: keystoned\r\n");
    if (!has_date) {
        size_t date_len;
        const char *date = ks_date_header(x->w, &date_len);
        ks_out_put(&o, date, date_len);
    }
    if (!has_type && !nobody && !empty && (res->written || content_length > 0))
        ks_out_str(&o, "Content-Type: text/plain; charset=utf-8\r\n");
    if (empty) {
        ks_out_str(&o, "Content-Length: 0\r\n");
    } else if (stream) {
        if (x->r->http_major == 1 && x->r->http_minor == 0)
            res->until_close = true;
        else
            res->chunked = true;
        if (res->until_close)
            q->keep_alive = false;
        if (res->chunked && !nobody)
            ks_out_str(&o, "Transfer-Encoding: chunked\r\n");
    } else if (!nobody) {
        ks_out_str(&o, "Content-Length: ");
        ks_out_dec(&o, content_length);
        ks_out_str(&o, "\r\n");
    }
    ks_out_field(&o, "X-Request-ID", 12, x->r->id, x->r->id_len);
    for (size_t i = 0; i < res->nheaders; i++)
        ks_out_field(&o, res->headers[i].name, res->headers[i].name_len, res->headers[i].value,
                     res->headers[i].value_len);
    ks_out_str(&o, q->keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
    if (o.overflow) {
        /* the script's headers do not fit: a 500 rather than a truncated head */
        res->nheaders = 0;
        res->status = 500;
        res->written = false;
        q->keep_alive = false;
        send_head(q, false, 0, NULL, 0);
        return -1;
    }
    res->started = true;
    x->status = status;
    x->r->status = status;
    x->responded = true;
    bool skip = nobody || empty || is_head(q);
    struct iovec iov[2] = {
        { .iov_base = head, .iov_len = o.len },
        { .iov_base = (void *)body, .iov_len = skip || body == NULL ? 0 : body_len },
    };
    return writev_client(q, iov, 2);
}

static int send_chunk(struct ks_lua_req *q, const char *s, size_t n)
{
    struct ks_lua_resp *res = &q->res;
    int status = res->status > 0 ? res->status : 200;
    if (n == 0 || is_head(q) || no_content_status(status))
        return 0;
    if (res->until_close) {
        struct iovec iov = { .iov_base = (void *)s, .iov_len = n };
        return writev_client(q, &iov, 1);
    }
    char size[KS_CHUNK_LINE_MAX];
    struct iovec iov[3] = {
        { .iov_base = size, .iov_len = ks_chunk_size_line(size, n) },
        { .iov_base = (void *)s, .iov_len = n },
        { .iov_base = "\r\n", .iov_len = 2 },
    };
    return writev_client(q, iov, 3);
}

int ks_lua_res_finish(struct ks_lua_req *q)
{
    struct ks_lua_resp *res = &q->res;
    if (q->proxied)
        return 0;
    if (!res->started)
        return send_head(q, false, res->len, res->buf, res->len);
    if (res->chunked && !is_head(q) && !no_body_status(res->status > 0 ? res->status : 200)) {
        struct iovec iov = { .iov_base = "0\r\n\r\n", .iov_len = 5 };
        return writev_client(q, &iov, 1);
    }
    return 0;
}

static int ensure_room(struct ks_lua_resp *res, size_t n)
{
    if (res->len + n <= res->cap)
        return 0;
    size_t nc = res->cap ? res->cap : 4096;
    while (nc < res->len + n)
        nc *= 2;
    char *nb = realloc(res->buf, nc);
    if (nb == NULL)
        return -1;
    res->buf = nb;
    res->cap = nc;
    return 0;
}

void ks_lua_res_error(struct ks_lua_req *q, int status, const char *message, const char *hname,
                      const char *hvalue)
{
    struct ks_lua_resp *res = &q->res;
    res->status = status;
    res->len = 0;
    res->written = true;
    /* headers middleware set before next() stay; the type and hname are ours */
    size_t k = 0;
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct ks_lua_resp_header *h = &res->headers[i];
        if (!(h->name_len == 12 && strncasecmp(h->name, "content-type", 12) == 0) &&
            !(hname != NULL && h->name_len == strlen(hname) && strncasecmp(h->name, hname, h->name_len) == 0))
            res->headers[k++] = *h;
    }
    res->nheaders = k < KS_LUA_MAX_RESP_HEADERS - 2 ? k : KS_LUA_MAX_RESP_HEADERS - 2;
    static const char ct[] = "Content-Type", json[] = "application/json";
    res->headers[res->nheaders++] = (struct ks_lua_resp_header){ ct, json, sizeof(ct) - 1, sizeof(json) - 1 };
    if (hname != NULL)
        res->headers[res->nheaders++] =
            (struct ks_lua_resp_header){ hname, hvalue, strlen(hname), strlen(hvalue) };
    char body[1024];
    size_t pos = 0;
    ks_appendf(body, sizeof(body), &pos, "{\"error\":{\"code\":%d,\"message\":\"", status);
    ks_json_escape(body, sizeof(body), &pos, message, strlen(message));
    ks_appendf(body, sizeof(body), &pos, "\",\"request_id\":\"%s\"}}\n", q->x->r->id);
    if (ensure_room(res, pos) == 0) {
        memcpy(res->buf, body, pos);
        res->len = pos;
    }
}

/* ---- the res methods -------------------------------------------------------------- */

static void check_value(lua_State *L, const char *what, const char *v, size_t n)
{
    if (!ks_http_is_value(v, n))
        luaL_error(L, "%s: control characters in a header value", what);
}

static void check_name(lua_State *L, const char *what, const char *s, size_t n)
{
    if (n > 256 || !ks_http_is_token(s, n))
        luaL_error(L, "%s: bad header name", what);
    /* as for the request, but the Via of a response is the upstream's
     * (loop detection counts only a request's): a script may change or
     * hide it */
    if (ks_http_edit_protected(s, n) && !ks_http_name_is(s, n, "via"))
        luaL_error(L, "%s: %s is set by keystoned", what, s);
}

static int check_status(lua_State *L, int idx)
{
    lua_Integer c = luaL_checkinteger(L, idx);
    /* a 1xx is interim: sent as the answer it would leave the request
     * unanswered and the connection out of step */
    if (c < 200 || c > 599)
        luaL_error(L, "res:status: %I is not a final HTTP status (200 to 599)", (LUAI_UACINT)c);
    return (int)c;
}

static void not_sent(lua_State *L, struct ks_lua_req *q, const char *what)
{
    if (q->proxied)
        luaL_error(L, "%s: the request was proxied: its response is already sent", what);
    if (q->res.started)
        luaL_error(L, "%s: the response head is already sent", what);
}

static int l_status(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    int code = check_status(L, 2);
    if (ks_lua_of(L)->phase == KS_LUA_RESPONSE) {
        q->head->status = code;
        return 0;
    }
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE | KS_LUA_HANDLER, "res:status");
    not_sent(L, q, "res:status");
    q->res.status = code;
    return 0;
}

static void remove_header(struct ks_lua_resp *res, const char *name, size_t nl)
{
    size_t k = 0;
    for (size_t i = 0; i < res->nheaders; i++)
        if (!(res->headers[i].name_len == nl && strncasecmp(res->headers[i].name, name, nl) == 0))
            res->headers[k++] = res->headers[i];
    res->nheaders = k;
}

static void add_header(lua_State *L, struct ks_lua_req *q, const char *name, size_t nl,
                       const char *value, size_t vl)
{
    struct ks_lua_resp *res = &q->res;
    if (res->nheaders == KS_LUA_MAX_RESP_HEADERS)
        luaL_error(L, "res:header: more than %d headers", KS_LUA_MAX_RESP_HEADERS);
    size_t bytes = nl + vl + 4;
    for (size_t i = 0; i < res->nheaders; i++)
        bytes += res->headers[i].name_len + res->headers[i].value_len + 4;
    if (bytes > SCRIPT_HEADERS_MAX)
        luaL_error(L, "res:header: the headers would take more than %d bytes", SCRIPT_HEADERS_MAX);
    res->headers[res->nheaders++] = (struct ks_lua_resp_header){
        ks_lua_arena_copy(L, q, name, nl), ks_lua_arena_copy(L, q, value, vl), nl, vl,
    };
}

static void set_header(lua_State *L, struct ks_lua_req *q, const char *name, size_t nl,
                       const char *value, size_t vl)
{
    remove_header(&q->res, name, nl);
    if (value != NULL)
        add_header(L, q, name, nl, value, vl);
}

/* res:header(name, value): value nil (remove), a string, or a list of
 * strings, one line each (several Set-Cookie).  Every value is checked
 * before anything changes. */
static int l_header(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    size_t nl;
    const char *name = luaL_checklstring(L, 2, &nl);
    check_name(L, "res:header", name, nl);
    lua_settop(L, 3);
    bool list = lua_type(L, 3) == LUA_TTABLE;
    lua_Integer nv = list ? luaL_len(L, 3) : !lua_isnil(L, 3);
    if (nv > KS_LUA_MAX_RESP_HEADERS)
        return luaL_error(L, "res:header: more than %d values", KS_LUA_MAX_RESP_HEADERS);
    luaL_checkstack(L, (int)nv, "res:header");
    for (lua_Integer i = 1; i <= nv; i++) {
        if (list && lua_geti(L, 3, i) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            return luaL_error(L, "res:header: value %d of the list is not a string", (int)i);
        if (!list) {
            luaL_checkstring(L, 3);
            lua_pushvalue(L, 3);
        }
        size_t vl;
        const char *v = lua_tolstring(L, -1, &vl);
        check_value(L, "res:header", v, vl);
    }

    if (ks_lua_of(L)->phase == KS_LUA_RESPONSE) {
        struct ks_response_head *h = q->head;
        if (h->nedits + (size_t)(nv > 0 ? nv : 1) > h->max_edits)
            return luaL_error(L, "res:header: too many header changes (at most %d)", (int)h->max_edits);
        const char *n = ks_lua_arena_copy(L, q, name, nl);
        if (nv == 0)
            h->edits[h->nedits++] = (struct ks_header_edit){ n, nl, NULL, 0, false };
        for (lua_Integer i = 1; i <= nv; i++) {
            size_t vl;
            const char *v = lua_tolstring(L, 3 + (int)i, &vl);
            h->edits[h->nedits++] = (struct ks_header_edit){ n, nl, ks_lua_arena_copy(L, q, v, vl), vl, i > 1 };
        }
        return 0;
    }
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE | KS_LUA_HANDLER, "res:header");
    not_sent(L, q, "res:header");
    remove_header(&q->res, name, nl);
    for (lua_Integer i = 1; i <= nv; i++) {
        size_t vl;
        const char *v = lua_tolstring(L, 3 + (int)i, &vl);
        add_header(L, q, name, nl, v, vl);
    }
    return 0;
}

static void write_out(lua_State *L, struct ks_lua_req *q, const char *s, size_t n)
{
    struct ks_lua_resp *res = &q->res;
    res->written = true;
    if (!res->started && res->len + n <= KS_LUA_STREAM_AT) {
        if (ensure_room(res, n) < 0)
            luaL_error(L, "res:write: out of memory");
        memcpy(res->buf + res->len, s, n);
        res->len += n;
        return;
    }
    struct ks_lua_pause p;
    ks_lua_pause(q->lx, &p);
    int rc = 0;
    if (!res->started) {
        rc = send_head(q, true, 0, NULL, 0);
        if (rc == 0 && res->len > 0)
            rc = send_chunk(q, res->buf, res->len);
        res->len = 0;
    }
    if (rc == 0)
        rc = send_chunk(q, s, n);
    ks_lua_resume(q->lx, &p);
    if (rc < 0)
        ks_lua_abort(L, q, -1, "the client connection was lost");
}

static int l_write(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE | KS_LUA_HANDLER, "res:write");
    if (q->proxied)
        return luaL_error(L, "res:write: the request was proxied: its response is already sent");
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    write_out(L, q, s, n);
    return 0;
}

static int l_json(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE | KS_LUA_HANDLER, "res:json");
    if (q->proxied)
        return luaL_error(L, "res:json: the request was proxied: its response is already sent");
    luaL_checkany(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, JSON_ENCODE_KEY);
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    bool has_type = false;
    for (size_t i = 0; i < q->res.nheaders; i++)
        has_type |= q->res.headers[i].name_len == 12 &&
                    strncasecmp(q->res.headers[i].name, "content-type", 12) == 0;
    if (!has_type && !q->res.started)
        set_header(L, q, "Content-Type", 12, "application/json", 16);
    write_out(L, q, s, n);
    return 0;
}

static int l_redirect(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE | KS_LUA_HANDLER, "res:redirect");
    not_sent(L, q, "res:redirect");
    size_t n;
    const char *url = luaL_checklstring(L, 2, &n);
    lua_Integer code = luaL_optinteger(L, 3, 302);
    if (code != 301 && code != 302 && code != 303 && code != 307 && code != 308)
        return luaL_error(L, "res:redirect: %d is not a redirect status (301, 302, 303, 307, 308)",
                          (int)code);
    if (n == 0)
        return luaL_error(L, "res:redirect: empty URL");
    check_value(L, "res:redirect", url, n);
    q->res.status = (int)code;
    set_header(L, q, "Location", 8, url, n);
    return 0;
}

static int l_get_status(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    if (ks_lua_of(L)->phase == KS_LUA_RESPONSE)
        lua_pushinteger(L, q->head->status);
    else if (q->proxied || q->res.started)
        lua_pushinteger(L, q->x->status);
    else
        lua_pushinteger(L, q->res.status > 0 ? q->res.status : 200);
    return 1;
}

static int l_get_header(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    size_t n;
    const char *name = luaL_checklstring(L, 2, &n);
    if (ks_lua_of(L)->phase == KS_LUA_RESPONSE) {
        const struct ks_response_head *h = q->head;
        for (size_t i = h->nedits; i-- > 0;)     /* the edit that decides: a list's first */
            if (!h->edits[i].append && h->edits[i].name_len == n &&
                strncasecmp(h->edits[i].name, name, n) == 0) {
                if (h->edits[i].value == NULL)
                    lua_pushnil(L);
                else
                    lua_pushlstring(L, h->edits[i].value, h->edits[i].value_len);
                return 1;
            }
        for (size_t i = 0; i < h->nheaders; i++)
            if (h->headers[i].name_len == n && strncasecmp(h->headers[i].name, name, n) == 0) {
                lua_pushlstring(L, h->headers[i].value, h->headers[i].value_len);
                return 1;
            }
        lua_pushnil(L);
        return 1;
    }
    for (size_t i = 0; i < q->res.nheaders; i++)
        if (q->res.headers[i].name_len == n && strncasecmp(q->res.headers[i].name, name, n) == 0) {
            lua_pushlstring(L, q->res.headers[i].value, q->res.headers[i].value_len);
            return 1;
        }
    lua_pushnil(L);
    return 1;
}

int ks_lua_open_response(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "status", l_status },         { "header", l_header },
        { "write", l_write },           { "json", l_json },
        { "redirect", l_redirect },     { "get_status", l_get_status },
        { "get_header", l_get_header }, { NULL, NULL },
    };
    ks_lua_new_class(L, KS_LUA_RES_CLASS, methods);
    struct ks_lua *lx = ks_lua_of(L);
    lx->ref_res = ks_lua_singleton(L, KS_LUA_RES_CLASS, &lx->res_self);
    /* res:json keeps cjson's encode even if the script rebinds json */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "json");
    lua_getfield(L, -1, "encode");
    lua_setfield(L, LUA_REGISTRYINDEX, JSON_ENCODE_KEY);
    lua_pop(L, 2);
    return 0;
}
