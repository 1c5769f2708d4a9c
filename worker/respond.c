/*
 * respond.c: responses written by the worker itself.
 */
#include <config.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keystoned/util.h"
#include "worker/respond.h"

const char *ks_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 508: return "Loop Detected";
    default: return status < 200 ? "Informational" : status < 300 ? "OK" : status < 400 ? "Redirect"
                   : status < 500 ? "Client Error" : "Server Error";
    }
}

const char *ks_date_header(struct ks_worker *w, size_t *len)
{
    time_t now = time(NULL);
    if (now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        w->date_len = strftime(w->date_line, sizeof(w->date_line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        w->date_sec = now;
    }
    *len = w->date_len;
    return w->date_line;
}

int ks_respond(struct ks_conn *c, struct ks_request *r, int status, const char *content_type,
               const char *extra_headers, const char *body, size_t body_len, bool keep_alive)
{
    char head[2048];
    size_t pos = 0;
    bool no_body = status == 204 || status == 304 || status < 200;
    size_t date_len;
    ks_appendf(head, sizeof(head), &pos, "HTTP/1.1 %d %s\r\nServer: keystoned\r\n%s", status,
               ks_status_reason(status), ks_date_header(c->w, &date_len));
    if (content_type != NULL && !no_body)
        ks_appendf(head, sizeof(head), &pos, "Content-Type: %s\r\n", content_type);
    if (!no_body)
        ks_appendf(head, sizeof(head), &pos, "Content-Length: %zu\r\n", body_len);
    if (r != NULL && r->id[0] != '\0')
        ks_appendf(head, sizeof(head), &pos, "X-Request-ID: %s\r\n", r->id);
    if (extra_headers != NULL)
        ks_appendf(head, sizeof(head), &pos, "%s", extra_headers);
    if (ks_appendf(head, sizeof(head), &pos, "Connection: %s\r\n\r\n", keep_alive ? "keep-alive" : "close") < 0)
        return -1;
    bool head_only = no_body || (r != NULL && r->head_method);
    struct iovec iov[2] = {
        { .iov_base = head, .iov_len = pos },
        { .iov_base = (void *)body, .iov_len = head_only ? 0 : body_len },
    };
    if (r != NULL)
        r->status = status;
    int64_t deadline = ks_now_ms() + c->w->table->settings.send_timeout_ms;
    return ks_conn_writev(c, iov, 2, deadline) == KS_IO_OK ? 0 : -1;
}

int ks_respond_error(struct ks_conn *c, struct ks_request *r, int status, const char *message,
                     const char *extra_headers, bool keep_alive)
{
    char body[1024];
    size_t pos = 0;
    ks_appendf(body, sizeof(body), &pos, "{\"error\":{\"code\":%d,\"message\":\"", status);
    ks_json_escape(body, sizeof(body), &pos, message, strlen(message));
    ks_appendf(body, sizeof(body), &pos, "\",\"request_id\":\"%s\"}}\n", r != NULL ? r->id : "");
    return ks_respond(c, r, status, "application/json", extra_headers, body, pos, keep_alive);
}
