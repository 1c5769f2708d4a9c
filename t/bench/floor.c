/*
 * floor.c: the least a prefork proxy with blocking I/O can do, as a
 * measuring stick for t/bench/run (scenarios 1 and 2).  Not part of keystoned.
 *
 * N processes share one listener; each serves one client connection at a
 * time over one keep-alive upstream connection, the model keystoned is
 * built on (DESIGN.md).  Per request it makes the four system calls the
 * model cannot do without (read the request, write it upstream, read the
 * answer, write it back) and nothing else: no parsing beyond finding where
 * a head and a Content-Length body end, no header rewriting, no routing,
 * no deadlines, no logging.  Its req/s is therefore the ceiling of the
 * model on the machine, and keystoned/floor says how much of it
 * keystoned's own work costs.  It only handles what scenario 1 sends (a
 * GET without a body) and what the benchmark's backend answers (a head
 * with Content-Length); anything else closes the client connection.
 *
 * usage: floor LISTEN_PORT UPSTREAM_PORT PROCESSES [batch]   (127.0.0.1 both)
 * UPSTREAM_PORT 0: no upstream; every request gets the fixed "Hello World"
 * answer of scenario 2, the least a prefork server answering in-process
 * can do (keystoned answering from Lua).
 * batch: the processes run under SCHED_BATCH, as keystoned's workers do
 * by default (server.worker_scheduling), so that the two compare alike.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define ANSWER "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nHello World"

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int upstream_connect(int port)
{
    struct sockaddr_in a = loopback(port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("floor: upstream connect");
        exit(1);
    }
    nodelay(fd);
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read until buf holds a whole message: a head, and as many body bytes
 * as its Content-Length says (with_body).  Returns its length, or -1. */
static ssize_t read_message(int fd, char *buf, bool with_body)
{
    size_t len = 0;
    for (;;) {
        if (len > 0) {
            buf[len] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            if (end != NULL) {
                size_t head = (size_t)(end + 4 - buf), body = 0;
                if (with_body) {
                    char *cl = strcasestr(buf, "\r\ncontent-length:");
                    if (cl == NULL || cl > end)
                        return -1;
                    body = strtoul(cl + 17, NULL, 10);
                }
                if (head + body > BUF_SIZE - 1)
                    return -1;
                if (len >= head + body)
                    return len == head + body ? (ssize_t)len : -1;  /* no pipelining */
            }
        }
        if (len == BUF_SIZE - 1)
            return -1;
        ssize_t r = recv(fd, buf + len, BUF_SIZE - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        len += (size_t)r;
    }
}

static void serve(int listen_fd, int upstream_port, bool batch)
{
    static char req[BUF_SIZE], resp[BUF_SIZE];
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    struct sched_param sp = { .sched_priority = 0 };
    if (batch && sched_setscheduler(0, SCHED_BATCH, &sp) < 0)
        perror("floor: SCHED_BATCH");
    int up = upstream_port > 0 ? upstream_connect(upstream_port) : -1;
    for (;;) {
        int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        nodelay(c);
        for (;;) {
            ssize_t n = read_message(c, req, false);
            if (n < 0)
                break;
            if (up < 0) {   /* no upstream: the fixed answer of scenario 2 */
                if (write_all(c, ANSWER, sizeof(ANSWER) - 1) < 0)
                    break;
                continue;
            }
            /* an upstream connection the backend closed (after a request
             * with Connection: close, the probes'): once more on a new one */
            ssize_t m = -1;
            for (int attempt = 0; attempt < 2 && m < 0; attempt++) {
                if (attempt > 0) {
                    close(up);
                    up = upstream_connect(upstream_port);
                }
                if (write_all(up, req, (size_t)n) == 0)
                    m = read_message(up, resp, true);
            }
            if (m < 0 || write_all(c, resp, (size_t)m) < 0)
                break;
        }
        close(c);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4 && !(argc == 5 && strcmp(argv[4], "batch") == 0)) {
        fprintf(stderr, "usage: floor LISTEN_PORT UPSTREAM_PORT PROCESSES [batch]\n");
        return 2;
    }
    bool batch = argc == 5;
    int listen_port = atoi(argv[1]), upstream_port = atoi(argv[2]), n = atoi(argv[3]), one = 1;
    struct sockaddr_in a = loopback(listen_port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 511) < 0) {
        perror("floor: listen");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            serve(fd, upstream_port, batch);
            _exit(0);
        }
        if (pid < 0) {
            perror("floor: fork");
            return 1;
        }
    }
    signal(SIGTERM, SIG_DFL);
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    return 0;
}
