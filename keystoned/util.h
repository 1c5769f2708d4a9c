/*
 * util.h: small helpers shared by every process: typed value parsers
 * (durations, sizes, addresses, URLs), time, strings and file descriptors.
 */
#ifndef KS_UTIL_H
#define KS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define KS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- time ------------------------------------------------------------ */

/* CLOCK_MONOTONIC in milliseconds: comparable between processes. */
int64_t ks_now_ms(void);
/* CLOCK_MONOTONIC in microseconds. */
int64_t ks_now_us(void);
/* The same clock as ks_now_ms, read the cheap way (CLOCK_MONOTONIC_COARSE:
 * a quarter of the cost, up to one timer tick, 1-10 ms, behind): for
 * timestamps shown to people, never for a deadline. */
int64_t ks_coarse_ms(void);
/* Wall clock (CLOCK_REALTIME) in milliseconds since the epoch. */
int64_t ks_wall_ms(void);
/* Format a wall-clock time as RFC 3339 UTC with milliseconds
 * ("2026-11-22T10:00:00.123Z"); buf needs 25 bytes. */
void ks_format_rfc3339(int64_t wall_ms, char *buf, size_t len);

/* ---- typed values (config and Lua) --------------------------------- */

/* "250ms", "5s", "2m", "1h", "1.5s", "0": milliseconds.  A bare number
 * other than 0 is refused (the unit is not guessable). */
int ks_parse_duration(const char *s, int64_t *ms);
/* "512", "512B", "16KB", "10MB", "1GB" (powers of 1024): bytes. */
int ks_parse_size(const char *s, uint64_t *bytes);

/* A listen or connect address with a numeric host. */
struct ks_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64];          /* as normalised for logs: "127.0.0.1:8080", "[::1]:80" */
};
/* "127.0.0.1:8080", ":8080" (all IPv4 interfaces), "[::1]:8080", "*:8080". */
int ks_parse_addr(const char *s, struct ks_addr *out, char *err, size_t errlen);

/* An upstream URL: http://host[:port][/] (https is accepted by the parser
 * for later use; the caller decides what it supports). */
struct ks_url {
    char scheme[8];         /* "http" or "https" */
    char host[256];         /* without brackets for IPv6 */
    uint16_t port;
    char hostport[300];     /* what goes into a Host header: "h:p", "[v6]:p" */
};
int ks_parse_url(const char *s, struct ks_url *out, char *err, size_t errlen);
/* Resolve host:port of a URL (getaddrinfo, numeric or name) to an address. */
int ks_resolve_url(const struct ks_url *u, struct ks_addr *out, char *err, size_t errlen);

/* ---- strings ---------------------------------------------------------- */

size_t ks_strlcpy(char *dst, const char *src, size_t size);
/* Levenshtein distance, capped at cap+1 (cheap "did you mean"). */
int ks_edit_distance(const char *a, const char *b, int cap);
/* Append JSON-escaped s (length n) to buf at *pos, never past cap;
 * returns 0 or -1 when truncated (buf stays NUL-terminated). */
int ks_json_escape(char *buf, size_t cap, size_t *pos, const char *s, size_t n);
/* snprintf-append: returns 0 or -1 when truncated. */
int ks_appendf(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Numbers as text without printf (the proxy's hot path formats a few per
 * request): v in decimal, or in hex with at least width digits (0-padded,
 * lower case).  dst needs 20 (decimal) or 16 (hex) bytes; returns the
 * length written, no NUL. */
size_t ks_fmt_dec(char *dst, uint64_t v);
size_t ks_fmt_hex(char *dst, uint64_t v, unsigned width);
/* 64-bit FNV-1a over several strings separated by a 0 byte; never 0. */
uint64_t ks_hash_strings(const char *const *parts, size_t n);

/* ---- descriptors ---------------------------------------------------- */

int ks_set_nonblock(int fd, bool on);
int ks_set_cloexec(int fd, bool on);
/* write() the whole buffer on a blocking descriptor, retrying on EINTR. */
int ks_write_all(int fd, const void *buf, size_t len);
/* Read a whole small file into a NUL-terminated malloc'd buffer, refusing
 * files larger than max bytes. */
char *ks_read_file(const char *path, size_t max, size_t *len_out, char *err, size_t errlen);
/* Create path as a new file for reading and writing, never through a
 * symbolic link: whatever is at the name (a file left by a crash, a link
 * planted by someone who may write to the directory) is removed first,
 * and O_EXCL | O_NOFOLLOW refuse anything made there in between.  For
 * the temporary names that are renamed into place. */
int ks_open_new(const char *path, mode_t mode);
/* Join a path relative to dir ("a.lua" + "/etc/k" -> "/etc/k/a.lua");
 * absolute paths are copied.  Returns malloc'd string. */
char *ks_path_join(const char *dir, const char *path);

/* ---- processes ------------------------------------------------------ */

/* Signals keystoned does not use but operators and tools send out of
 * habit (nginx's USR2 binary upgrade and WINCH, Apache's and unicorn's
 * TTIN/TTOU, a stray ALRM): their default action would kill (or stop)
 * the master silently, leaving its files behind.  The master logs and
 * ignores them, the workers ignore them.  Use as { KS_IGNORED_SIGNALS }. */
#define KS_IGNORED_SIGNALS SIGUSR2, SIGALRM, SIGWINCH, SIGTTIN, SIGTTOU, SIGVTALRM

/* When process pid started, in clock ticks since boot (field 22 of
 * /proc/PID/stat); 0 when that cannot be read.  A pid and its start time
 * name one process: a pid alone may have been reused since. */
uint64_t ks_proc_start_ticks(pid_t pid);

/* Whether process pid has exited but is not reaped yet (a zombie):
 * kill(pid, 0) still succeeds on it, yet it holds nothing any more. */
bool ks_proc_exited(pid_t pid);

/* Whether process pid is stopped (SIGSTOP, SIGTSTP or a debugger): alive,
 * but it will not run until it is continued. */
bool ks_proc_stopped(pid_t pid);

#endif
