/*
 * keystoned.c: the daemon's entry point: flags, config test, pid file,
 * daemonizing.  Everything else happens in master/.
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "master/config.h"
#include "master/master.h"
#include "master/publish.h"

#define DEFAULT_CONFIG KS_SYSCONFDIR "/keystone/keystone.yaml"

#define USAGE "usage: keystoned [-dfhtv] [-c file]\n"

static _Noreturn void usage(void)
{
    fputs(USAGE, stderr);
    exit(1);
}

/* -h: what each option does, as nginx -h shows it (keystoned(8) has more) */
static _Noreturn void help(void)
{
    printf(USAGE
           "  -c file  the configuration (default %s)\n"
           "  -d       log at level debug, whatever log_level says\n"
           "  -f       stay in the foreground, logging to stderr\n"
           "  -h       print this help and exit\n"
           "  -t       check the configuration and exit\n"
           "  -v       print the version and exit\n",
           DEFAULT_CONFIG);
    exit(0);
}

/* Lock the pid file so that a second instance refuses to start.  The lock
 * belongs to the open file description, so it survives daemonizing and is
 * released by the kernel when the master exits, however it exits.  It is
 * opened as root, often in a directory server.user may write to: a
 * symbolic link there is not followed (root would truncate its target). */
static int pidfile_lock(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        if (errno == ELOOP)
            snprintf(err, errlen, "cannot open pid file %s: it is a symbolic link (not followed)", path);
        else
            snprintf(err, errlen, "cannot open pid file %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (errno == EWOULDBLOCK)
            snprintf(err, errlen, "keystoned is already running (pid %s, pid file %s)",
                     pid[0] ? pid : "?", path);
        else
            snprintf(err, errlen, "cannot lock pid file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void pidfile_write(int fd)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        ks_log_warn("pidfile", "cannot write the pid file: %s", strerror(errno));
}

/* Classic daemonizing (fork, setsid, fork, chdir /, stdio to /dev/null),
 * with a pipe back to the original process: it waits for the daemon's
 * start-up verdict and exits 0 or prints the error and exits 1, so init
 * scripts see a failed start. Returns the pipe's write end in the daemon. */
static int daemonize(void)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) {
        fprintf(stderr, "keystoned: pipe: %s\n", strerror(errno));
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "keystoned: fork: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(ready[1]);
        waitpid(pid, NULL, 0);
        char line[1024];
        size_t len = 0;
        ssize_t r;
        while (len < sizeof(line) - 1 && (r = read(ready[0], line + len, sizeof(line) - 1 - len)) != 0) {
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                break;
            }
            len += (size_t)r;
            if (memchr(line, '\n', len) != NULL)
                break;
        }
        line[len] = '\0';
        line[strcspn(line, "\n")] = '\0';
        /* _exit: what this process holds (the config, the master's
         * state) now belongs to the daemon; no exit handlers for it */
        if (strcmp(line, "ok") == 0)
            _exit(0);
        fprintf(stderr, "keystoned: %s\n", line[0] ? line : "start-up failed (see the error log)");
        _exit(1);
    }
    close(ready[0]);
    setsid();
    pid = fork();
    if (pid < 0)
        _exit(1);
    if (pid > 0)
        _exit(0);
    if (chdir("/") < 0)
        _exit(1);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        if (ks_log_fd() != 2)
            dup2(null, 2);
        if (null > 2)
            close(null);
    }
    return ready[1];
}

/* Started with descriptor 0, 1 or 2 closed (by an init system, cron, a
 * "keystoned <&- >&-"), the first files and sockets opened would take
 * them: daemonize() then points them at /dev/null, and a listener, the
 * locked pid file (its lock with it) or the error log is lost.  Fill them
 * with /dev/null first, as OpenSSH's sanitise_stdfd() does. */
static void stdio_fill(void)
{
    int fd;
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
        ;
    if (fd > 2)
        close(fd);
}

int main(int argc, char **argv)
{
    const char *config_path = DEFAULT_CONFIG;
    stdio_fill();
    bool foreground = false, test_only = false, debug = false;
    int ch;
    while ((ch = getopt(argc, argv, "c:dfhtv")) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'd':
            debug = true;
            break;
        case 'f':
            foreground = true;
            break;
        case 't':
            test_only = true;
            break;
        case 'h':
            help();
        case 'v':
            printf("keystoned %s\n", PACKAGE_VERSION);
            return 0;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    if (debug)
        ks_log_set_level(KS_LOG_DEBUG);
    /* absolute: reloads happen after chdir("/").  Only made absolute,
     * not resolved: every reload must follow the symbolic links again, as
     * nginx does (a deploy swapping keystone.yaml -> v2.yaml, a Kubernetes
     * ConfigMap whose ..data link moves to a new directory and whose old
     * one is deleted). */
    char abs_config[PATH_MAX], cwd[PATH_MAX];
    if (config_path[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL) {
        char *joined = ks_path_join(cwd, config_path);
        if (joined != NULL && strlen(joined) < sizeof(abs_config)) {
            ks_strlcpy(abs_config, joined, sizeof(abs_config));
            config_path = abs_config;
        }
        free(joined);
    }

    struct ks_diag diag = { 0 };
    /* -t cannot know whether the start will have -f: it checks for one
     * without, which opens server.error_log */
    unsigned flags = KS_CONFIG_START | (foreground && !test_only ? KS_CONFIG_FOREGROUND : 0);
    struct ks_config *cfg = ks_master_load_config(config_path, flags, &diag);
    if (cfg == NULL) {
        for (size_t i = 0; i < diag.n; i++)
            fprintf(stderr, "%s\n", diag.msgs[i]);
        fprintf(stderr, "keystoned: configuration %s has %zu error%s\n", config_path, diag.n,
                diag.n == 1 ? "" : "s");
        ks_diag_free(&diag);
        return 1;
    }
    if (test_only) {
        /* the route table is built too: a configuration it does not fit
         * in (limits.route_table_size) would fail at start */
        char err[256];
        void *buf = malloc(cfg->limits.route_table_size);
        size_t len = buf != NULL ? ks_publish_build(cfg, NULL, buf, cfg->limits.route_table_size, err,
                                                    sizeof(err))
                                 : 0;
        if (buf == NULL)
            snprintf(err, sizeof(err), "no memory for a route table of %llu bytes",
                     (unsigned long long)cfg->limits.route_table_size);
        free(buf);
        int rc = len > 0 ? 0 : 1;
        if (len > 0)
            printf("configuration OK\n");
        else
            fprintf(stderr, "keystoned: configuration %s: %s\n", config_path, err);
        ks_config_free(cfg);
        return rc;
    }

    if (!foreground && ks_log_open(cfg->server.error_log) < 0) {
        fprintf(stderr, "keystoned: cannot open error log %s: %s\n", cfg->server.error_log,
                strerror(errno));
        ks_config_free(cfg);
        return 1;
    }
    char err[PATH_MAX + 256];   /* room for a path in a message */
    /* a copy on the stack: cfg is handed to the master, and the process
     * that daemonizes exits from inside daemonize() */
    char pid_file[PATH_MAX];
    ks_strlcpy(pid_file, cfg->server.pid_file, sizeof(pid_file));
    int pidfd = pidfile_lock(pid_file, err, sizeof(err));
    if (pidfd < 0) {
        fprintf(stderr, "keystoned: %s\n", err);
        ks_config_free(cfg);
        return 1;
    }
    /* bind before daemonizing: "address in use" belongs on the terminal */
    struct ks_master *m = ks_master_new(cfg, foreground, debug, err, sizeof(err));
    if (m == NULL) {
        fprintf(stderr, "keystoned: %s\n", err);
        ks_config_free(cfg);
        ks_log_unlink("pid file", pid_file);
        return 1;
    }
    int ready_fd = foreground ? -1 : daemonize();
    pidfile_write(pidfd);
    int rc = ks_master_run(m, ready_fd, pidfd);
    ks_master_free(m);
    ks_log_unlink("pid file", pid_file);
    close(pidfd);
    return rc;
}
