/*
 * test_util.c: keystoned/util.c (typed values, strings, descriptors).
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keystoned/util.h"

/* ---- durations and sizes ------------------------------------------------ */

static int64_t dur(const char *s)
{
    int64_t ms = -12345;

    ck_assert_msg(ks_parse_duration(s, &ms) == 0, "\"%s\" refused", s);
    return ms;
}

static void dur_bad(const char *s)
{
    int64_t ms = -12345;

    ck_assert_msg(ks_parse_duration(s, &ms) == -1, "\"%s\" accepted", s);
    ck_assert_int_eq(ms, -12345);
}

START_TEST(test_duration)
{
    ck_assert_int_eq(dur("250ms"), 250);
    ck_assert_int_eq(dur("5s"), 5000);
    ck_assert_int_eq(dur("2m"), 120000);
    ck_assert_int_eq(dur("1h"), 3600000);
    ck_assert_int_eq(dur("1.5s"), 1500);
    ck_assert_int_eq(dur("0.25s"), 250);
    ck_assert_int_eq(dur(".5s"), 500);
    ck_assert_int_eq(dur("0"), 0);
    ck_assert_int_eq(dur("0s"), 0);
    ck_assert_int_eq(dur("0ms"), 0);
    ck_assert_int_eq(dur("1m30s"), 90000);
    ck_assert_int_eq(dur("1h1m1s1ms"), 3661001);
    ck_assert_int_eq(dur("1.0000000001s"), 1000);

    dur_bad("5");           /* the unit is not guessable */
    dur_bad("");
    dur_bad("-5s");
    dur_bad("5x");
    dur_bad("s");
    dur_bad("1.s");
    dur_bad(" 5s");
    dur_bad("5s ");
    dur_bad("5 s");
    dur_bad("00");
    dur_bad("1m30");
    dur_bad("+5s");
    dur_bad("99999999999999999999h");
    dur_bad("9999999999999999h");
    ck_assert_int_eq(ks_parse_duration(NULL, &(int64_t){ 0 }), -1);
}
END_TEST

static uint64_t size(const char *s)
{
    uint64_t n = 12345;

    ck_assert_msg(ks_parse_size(s, &n) == 0, "\"%s\" refused", s);
    return n;
}

static void size_bad(const char *s)
{
    uint64_t n = 12345;

    ck_assert_msg(ks_parse_size(s, &n) == -1, "\"%s\" accepted", s);
    ck_assert_uint_eq(n, 12345);
}

START_TEST(test_size)
{
    ck_assert_uint_eq(size("0"), 0);
    ck_assert_uint_eq(size("512"), 512);
    ck_assert_uint_eq(size("512B"), 512);
    ck_assert_uint_eq(size("16KB"), 16384);
    ck_assert_uint_eq(size("16kb"), 16384);
    ck_assert_uint_eq(size("16K"), 16384);
    ck_assert_uint_eq(size("16KiB"), 16384);
    ck_assert_uint_eq(size("10MB"), 10485760);
    ck_assert_uint_eq(size("1GB"), 1073741824);

    size_bad("");
    size_bad("KB");
    size_bad("1.5KB");
    size_bad("-1");
    size_bad("10 MB");
    size_bad("10MB ");
    size_bad("1TB");
    size_bad("1XB");
    size_bad("99999999999999999999");
    size_bad("17179869184GB");
}
END_TEST

/* ---- addresses and URLs --------------------------------------------------- */

START_TEST(test_addr)
{
    struct ks_addr a;
    char err[128];
    const struct sockaddr_in *s4 = (const void *)&a.ss;
    const struct sockaddr_in6 *s6 = (const void *)&a.ss;

    ck_assert_int_eq(ks_parse_addr("127.0.0.1:8080", &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.text, "127.0.0.1:8080");
    ck_assert_int_eq(a.ss.ss_family, AF_INET);
    ck_assert_int_eq(a.len, sizeof(struct sockaddr_in));
    ck_assert_int_eq(ntohs(s4->sin_port), 8080);
    ck_assert_uint_eq(ntohl(s4->sin_addr.s_addr), 0x7f000001);

    ck_assert_int_eq(ks_parse_addr(":8080", &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.text, "0.0.0.0:8080");
    ck_assert_int_eq(ks_parse_addr("*:80", &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.text, "0.0.0.0:80");

    ck_assert_int_eq(ks_parse_addr("[::1]:8080", &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.text, "[::1]:8080");
    ck_assert_int_eq(a.ss.ss_family, AF_INET6);
    ck_assert_int_eq(a.len, sizeof(struct sockaddr_in6));
    ck_assert_int_eq(ntohs(s6->sin6_port), 8080);
    ck_assert_int_eq(ks_parse_addr("[::]:65535", &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.text, "[::]:65535");

    ck_assert_int_eq(ks_parse_addr("localhost:80", &a, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "the host must be a numeric IP address, got \"localhost\"");
    ck_assert_int_eq(ks_parse_addr("127.0.0.1", &a, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "missing \":port\"");
    ck_assert_int_eq(ks_parse_addr("::1:80", &a, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "an IPv6 address needs brackets, as in \"[::1]:8080\"");
    ck_assert_int_eq(ks_parse_addr("1.2.3.4:0", &a, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "the port must be a number from 1 to 65535");
    ck_assert_int_eq(ks_parse_addr("1.2.3.4:65536", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_addr("1.2.3.4:80x", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_addr("1.2.3.4:", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_addr("[::1]80", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_addr("[::1:80", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_addr("[1.2.3.4]:80", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_addr("", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_addr("256.1.1.1:80", &a, err, sizeof(err)), -1);
}
END_TEST

START_TEST(test_url)
{
    struct ks_url u;
    char err[128];

    ck_assert_int_eq(ks_parse_url("http://127.0.0.1:3001", &u, err, sizeof(err)), 0);
    ck_assert_str_eq(u.scheme, "http");
    ck_assert_str_eq(u.host, "127.0.0.1");
    ck_assert_int_eq(u.port, 3001);
    ck_assert_str_eq(u.hostport, "127.0.0.1:3001");

    ck_assert_int_eq(ks_parse_url("http://backend.internal/", &u, err, sizeof(err)), 0);
    ck_assert_str_eq(u.host, "backend.internal");
    ck_assert_int_eq(u.port, 80);
    ck_assert_str_eq(u.hostport, "backend.internal:80");

    ck_assert_int_eq(ks_parse_url("HTTP://x:81/", &u, err, sizeof(err)), 0);
    ck_assert_str_eq(u.scheme, "http");
    ck_assert_int_eq(u.port, 81);

    ck_assert_int_eq(ks_parse_url("https://x", &u, err, sizeof(err)), 0);
    ck_assert_str_eq(u.scheme, "https");
    ck_assert_int_eq(u.port, 443);

    ck_assert_int_eq(ks_parse_url("http://[::1]:8080", &u, err, sizeof(err)), 0);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_str_eq(u.hostport, "[::1]:8080");

    ck_assert_int_eq(ks_parse_url("ftp://x", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "unsupported scheme \"ftp\"");
    ck_assert_int_eq(ks_parse_url("x:80", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "missing \"http://\"");
    ck_assert_int_eq(ks_parse_url("http://", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "missing host");
    ck_assert_int_eq(ks_parse_url("http://h/p", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "a path other than \"/\" is not supported");
    ck_assert_int_eq(ks_parse_url("http://h?x=1", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "a query or fragment is not supported");
    ck_assert_int_eq(ks_parse_url("http://u@h", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "user names in URLs are not supported");
    /* the ':' of a password is not the port's */
    ck_assert_int_eq(ks_parse_url("http://u:pw@h:80", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "user names in URLs are not supported");
    ck_assert_int_eq(ks_parse_url("http://u:8080@h", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "user names in URLs are not supported");
    ck_assert_int_eq(ks_parse_url("http://[::1]:1@h", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "user names in URLs are not supported");
    ck_assert_int_eq(ks_parse_url("http://h:0", &u, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "the port must be a number from 1 to 65535");
    ck_assert_int_eq(ks_parse_url("http://h:", &u, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_url("http://h:8x", &u, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_url("http://[zz]:80", &u, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_parse_url("http://h h", &u, err, sizeof(err)), -1);
}
END_TEST

START_TEST(test_resolve)
{
    struct ks_url u;
    struct ks_addr a;
    char err[256];

    ck_assert_int_eq(ks_parse_url("http://127.0.0.1:3001", &u, err, sizeof(err)), 0);
    ck_assert_int_eq(ks_resolve_url(&u, &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.text, "127.0.0.1:3001");
    ck_assert_int_eq(a.ss.ss_family, AF_INET);

    ck_assert_int_eq(ks_parse_url("http://[::1]:81", &u, err, sizeof(err)), 0);
    ck_assert_int_eq(ks_resolve_url(&u, &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.text, "[::1]:81");

    ck_assert_int_eq(ks_parse_url("http://localhost:82", &u, err, sizeof(err)), 0);
    ck_assert_int_eq(ks_resolve_url(&u, &a, err, sizeof(err)), 0);
    ck_assert_msg(strcmp(a.text, "127.0.0.1:82") == 0 || strcmp(a.text, "[::1]:82") == 0,
                  "localhost resolved to %s", a.text);

    /* .invalid never resolves (RFC 2606) */
    ck_assert_int_eq(ks_parse_url("http://nothing.invalid", &u, err, sizeof(err)), 0);
    ck_assert_int_eq(ks_resolve_url(&u, &a, err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "cannot resolve \"nothing.invalid\": ", 34) == 0, "%s", err);
}
END_TEST

/* ---- time ------------------------------------------------------------------ */

START_TEST(test_time)
{
    char buf[25];
    int64_t a, b;

    a = ks_now_ms();
    b = ks_now_ms();
    ck_assert_int_ge(b, a);
    ck_assert_int_ge(ks_now_us() / 1000, a);
    ck_assert_int_gt(ks_wall_ms(), 1600000000000LL);

    ks_format_rfc3339(0, buf, sizeof(buf));
    ck_assert_str_eq(buf, "1970-01-01T00:00:00.000Z");
    ks_format_rfc3339(1763805600123LL, buf, sizeof(buf));
    ck_assert_str_eq(buf, "2025-11-22T10:00:00.123Z");
    ks_format_rfc3339(-1, buf, sizeof(buf));
    ck_assert_str_eq(buf, "1969-12-31T23:59:59.999Z");
    ks_format_rfc3339(1763805600123LL, buf, 11);
    ck_assert_str_eq(buf, "2025-11-22");
}
END_TEST

/* ---- strings ------------------------------------------------------------ */

START_TEST(test_strlcpy)
{
    char buf[4];

    ck_assert_uint_eq(ks_strlcpy(buf, "ab", sizeof(buf)), 2);
    ck_assert_str_eq(buf, "ab");
    ck_assert_uint_eq(ks_strlcpy(buf, "abcdef", sizeof(buf)), 6);
    ck_assert_str_eq(buf, "abc");
    ck_assert_uint_eq(ks_strlcpy(buf, "zz", 0), 2);
    ck_assert_str_eq(buf, "abc");
}
END_TEST

START_TEST(test_edit_distance)
{
    ck_assert_int_eq(ks_edit_distance("workers", "workers", 2), 0);
    ck_assert_int_eq(ks_edit_distance("wokers", "workers", 2), 1);
    ck_assert_int_eq(ks_edit_distance("wrokers", "workers", 2), 2);
    ck_assert_int_eq(ks_edit_distance("kitten", "sitting", 5), 3);
    ck_assert_int_eq(ks_edit_distance("", "abc", 5), 3);
    ck_assert_int_eq(ks_edit_distance("abc", "", 5), 3);
    /* capped: anything beyond cap is cap + 1 */
    ck_assert_int_eq(ks_edit_distance("abc", "xyz", 1), 2);
    ck_assert_int_eq(ks_edit_distance("a", "abcdefgh", 2), 3);
    ck_assert_int_eq(ks_edit_distance("public_addr", "admin_addr", 2), 3);
}
END_TEST

START_TEST(test_json_escape)
{
    char buf[64];
    size_t pos = 0;

    ck_assert_int_eq(ks_json_escape(buf, sizeof(buf), &pos, "a\"b\\c\n\t\x01", 8), 0);
    ck_assert_str_eq(buf, "a\\\"b\\\\c\\n\\t\\u0001");
    ck_assert_uint_eq(pos, strlen(buf));

    /* valid UTF-8 passes, invalid bytes become code points, NUL escaped */
    pos = 0;
    ck_assert_int_eq(ks_json_escape(buf, sizeof(buf), &pos, "\xc3\xa9|\xff|\xc3|\0", 8), 0);
    ck_assert_str_eq(buf, "\xc3\xa9|\\u00ff|\\u00c3|\\u0000");
    /* overlong encoding and a surrogate are invalid */
    pos = 0;
    ck_assert_int_eq(ks_json_escape(buf, sizeof(buf), &pos, "\xc0\xaf\xed\xa0\x80", 5), 0);
    ck_assert_str_eq(buf, "\\u00c0\\u00af\\u00ed\\u00a0\\u0080");

    /* appends at pos */
    pos = 0;
    ck_assert_int_eq(ks_appendf(buf, sizeof(buf), &pos, "{\"p\":\""), 0);
    ck_assert_int_eq(ks_json_escape(buf, sizeof(buf), &pos, "/x", 2), 0);
    ck_assert_int_eq(ks_appendf(buf, sizeof(buf), &pos, "\"}"), 0);
    ck_assert_str_eq(buf, "{\"p\":\"/x\"}");

    /* truncation never leaves half an escape */
    {
        char small[8];

        /* the 2-byte escape fits in 8 bytes with the NUL, not in 7 */
        pos = 0;
        ck_assert_int_eq(ks_json_escape(small, 8, &pos, "abcde\"", 6), 0);
        ck_assert_str_eq(small, "abcde\\\"");
        pos = 0;
        ck_assert_int_eq(ks_json_escape(small, 7, &pos, "abcde\"f", 7), -1);
        ck_assert_str_eq(small, "abcde");
        ck_assert_uint_eq(pos, 5);
        pos = 0;
        ck_assert_int_eq(ks_json_escape(small, sizeof(small), &pos, "abcdefgh", 8), -1);
        ck_assert_str_eq(small, "abcdefg");
        ck_assert_uint_eq(pos, 7);
        ck_assert_int_eq(ks_json_escape(small, sizeof(small), &pos, "x", 1), -1);
        ck_assert_str_eq(small, "abcdefg");
    }
}
END_TEST

START_TEST(test_appendf)
{
    char buf[8];
    size_t pos = 0;

    ck_assert_int_eq(ks_appendf(buf, sizeof(buf), &pos, "%d", 123), 0);
    ck_assert_int_eq(ks_appendf(buf, sizeof(buf), &pos, "%s", "45"), 0);
    ck_assert_str_eq(buf, "12345");
    ck_assert_uint_eq(pos, 5);
    ck_assert_int_eq(ks_appendf(buf, sizeof(buf), &pos, "%s", "6789"), -1);
    ck_assert_str_eq(buf, "1234567");
    ck_assert_uint_eq(pos, 7);
    ck_assert_int_eq(ks_appendf(buf, sizeof(buf), &pos, "x"), -1);
    ck_assert_str_eq(buf, "1234567");
}
END_TEST

/* what ks_fmt_* wrote (n bytes in got) is what snprintf(fmt, v) writes */
static void same_as_printf(char *got, size_t n, const char *fmt, uint64_t v)
{
    char want[64];
    got[n] = '\0';
    snprintf(want, sizeof(want), fmt, (unsigned long long)v);
    ck_assert_str_eq(got, want);
}

/* ks_fmt_dec / ks_fmt_hex against snprintf, at the edges */
START_TEST(test_fmt_numbers)
{
    const uint64_t v[] = { 0, 1, 9, 10, 15, 16, 99, 100, 101, 255, 256, 4095, 10000, 999999, 1000000,
                           0xfffffffffull, UINT64_MAX / 10, UINT64_MAX - 1, UINT64_MAX };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char got[64];
        same_as_printf(got, ks_fmt_dec(got, v[i]), "%llu", v[i]);
        same_as_printf(got, ks_fmt_hex(got, v[i], 0), "%llx", v[i]);
        same_as_printf(got, ks_fmt_hex(got, v[i], 16), "%016llx", v[i]);
        same_as_printf(got, ks_fmt_hex(got, v[i], 5), "%05llx", v[i]);
    }
}
END_TEST

START_TEST(test_hash)
{
    const char *a[] = { "a" }, *e[] = { "" }, *ab[] = { "a", "b" }, *ab2[] = { "ab", "" };
    const char *id[] = { "demo", "app", "http://127.0.0.1:3001" };

    /* FNV-1a 64 reference values */
    ck_assert_uint_eq(ks_hash_strings(a, 1), 0xaf63dc4c8601ec8cULL);
    ck_assert_uint_eq(ks_hash_strings(e, 1), 0xcbf29ce484222325ULL);
    ck_assert_uint_eq(ks_hash_strings(id, 3), 0xc054b938ce306330ULL);
    /* the separator keeps ("a", "b") apart from ("ab", "") */
    ck_assert_uint_ne(ks_hash_strings(ab, 2), ks_hash_strings(ab2, 2));
    ck_assert_uint_ne(ks_hash_strings(ab, 2), 0);
}
END_TEST

/* ---- descriptors and files ---------------------------------------------- */

START_TEST(test_fd_flags)
{
    int p[2];
    char buf[3];

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(ks_set_nonblock(p[0], true), 0);
    ck_assert(fcntl(p[0], F_GETFL) & O_NONBLOCK);
    ck_assert_int_eq(read(p[0], buf, 1), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(ks_set_nonblock(p[0], false), 0);
    ck_assert(!(fcntl(p[0], F_GETFL) & O_NONBLOCK));
    ck_assert_int_eq(ks_set_cloexec(p[1], true), 0);
    ck_assert(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
    ck_assert_int_eq(ks_set_cloexec(p[1], false), 0);
    ck_assert(!(fcntl(p[1], F_GETFD) & FD_CLOEXEC));
    ck_assert_int_eq(ks_write_all(p[1], "abc", 3), 0);
    ck_assert_int_eq(read(p[0], buf, 3), 3);
    ck_assert(memcmp(buf, "abc", 3) == 0);
    close(p[0]);
    close(p[1]);
    ck_assert_int_eq(ks_set_nonblock(p[0], true), -1);
    ck_assert_int_eq(ks_write_all(p[1], "x", 1), -1);
}
END_TEST

START_TEST(test_read_file)
{
    char dir[] = "/tmp/ks_test_util.XXXXXX", path[128], err[256];
    size_t len = 0;
    char *s;
    FILE *f;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/f.txt", dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("hello\nworld", f);
    fclose(f);

    s = ks_read_file(path, 100, &len, err, sizeof(err));
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(len, 11);
    ck_assert_str_eq(s, "hello\nworld");
    free(s);
    /* exactly the limit is fine, one byte less is not */
    s = ks_read_file(path, 11, &len, err, sizeof(err));
    ck_assert_ptr_nonnull(s);
    free(s);
    ck_assert_ptr_null(ks_read_file(path, 10, &len, err, sizeof(err)));
    ck_assert_msg(strstr(err, "is too large (11 bytes, the limit is 10)") != NULL, "%s", err);

    ck_assert_ptr_null(ks_read_file(dir, 100, &len, err, sizeof(err)));
    ck_assert_msg(strstr(err, "is not a regular file") != NULL, "%s", err);
    unlink(path);
    ck_assert_ptr_null(ks_read_file(path, 100, &len, err, sizeof(err)));
    ck_assert_msg(strstr(err, "No such file or directory") != NULL, "%s", err);

    /* an empty file is an empty string */
    f = fopen(path, "w");
    fclose(f);
    s = ks_read_file(path, 0, &len, err, sizeof(err));
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(len, 0);
    ck_assert_str_eq(s, "");
    free(s);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_path_join)
{
    static const struct {
        const char *dir, *path, *want;
    } cases[] = {
        { "/etc/k", "a.lua", "/etc/k/a.lua" },
        { "/etc/k/", "a.lua", "/etc/k/a.lua" },
        { "/etc/k", "./scripts/a.lua", "/etc/k/scripts/a.lua" },
        { "/etc/k", "/abs/a.lua", "/abs/a.lua" },
        { "/", "x", "/x" },
        { "", "x", "x" },
        { NULL, "x", "x" },
        { "/etc/k", "../x", "/etc/k/../x" },
    };
    size_t i;

    for (i = 0; i < KS_ARRAY_LEN(cases); i++) {
        char *s = ks_path_join(cases[i].dir, cases[i].path);

        ck_assert_ptr_nonnull(s);
        ck_assert_str_eq(s, cases[i].want);
        free(s);
    }
}
END_TEST

/* A pid's start time, also when its name has spaces and parentheses
 * (the name is in the middle of /proc/PID/stat); 0 once it is gone.
 * A zombie is told apart (ks_proc_exited). */
START_TEST(test_proc_start_ticks)
{
    uint64_t self = ks_proc_start_ticks(getpid());
    ck_assert_uint_gt(self, 0);
    ck_assert_uint_eq(ks_proc_start_ticks(getpid()), self);

    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* gone with the test, whatever fails */
        prctl(PR_SET_NAME, "a) b (c) d");
        (void)!write(ready[1], "x", 1);
        pause();
        _exit(0);
    }
    uint64_t before = ks_proc_start_ticks(child);
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    uint64_t after = ks_proc_start_ticks(child);
    ck_assert_uint_ge(before, self);
    ck_assert_uint_eq(after, before);
    ck_assert(!ks_proc_exited(child));
    ck_assert(!ks_proc_exited(getpid()));

    /* killed, not reaped: a zombie, which kill(pid, 0) does not tell */
    kill(child, SIGKILL);
    for (int i = 0; i < 200 && !ks_proc_exited(child); i++)
        usleep(5000);
    ck_assert(ks_proc_exited(child));
    ck_assert_int_eq(kill(child, 0), 0);
    ck_assert_uint_eq(ks_proc_start_ticks(child), before);
    ck_assert_int_eq(waitpid(child, NULL, 0), child);
    ck_assert_uint_eq(ks_proc_start_ticks(child), 0);
    ck_assert(!ks_proc_exited(child));
    close(ready[0]);
    close(ready[1]);
}
END_TEST

static Suite *util_suite(void)
{
    Suite *s = suite_create("util");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_duration);
    tcase_add_test(tc, test_size);
    tcase_add_test(tc, test_addr);
    tcase_add_test(tc, test_url);
    tcase_add_test(tc, test_resolve);
    tcase_add_test(tc, test_time);
    tcase_add_test(tc, test_strlcpy);
    tcase_add_test(tc, test_edit_distance);
    tcase_add_test(tc, test_json_escape);
    tcase_add_test(tc, test_appendf);
    tcase_add_test(tc, test_fmt_numbers);
    tcase_add_test(tc, test_hash);
    tcase_add_test(tc, test_fd_flags);
    tcase_add_test(tc, test_read_file);
    tcase_add_test(tc, test_path_join);
    tcase_add_test(tc, test_proc_start_ticks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(util_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
