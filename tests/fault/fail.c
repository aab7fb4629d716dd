/*
 * fail.c - a preload library (build/tools/libfail.so) that makes chosen
 * calls fail, so the tests can reach the error paths no real setup provokes:
 *
 *   LD_PRELOAD=build/tools/libfail.so FAIL_CALL=listen bin/stage3_listen
 *   LD_PRELOAD=... FAIL_CALL=accept:ECONNABORTED@1 bin/stage4_accept
 *   LD_PRELOAD=... FAIL_CALL=write:EAGAIN@1,malloc:ENOMEM@2 bin/stage6_poll
 *
 * FAIL_CALL is a comma-separated list of rules, each CALL[:ERRNO][@N[+]]:
 *   CALL   the call to fail: socket, setsockopt, getsockopt, getsockname,
 *          getpeername, bind, listen, accept, sigaction, close, read, write,
 *          fcntl, pipe, open, fopen, readlink, malloc, calloc, getrlimit,
 *          setrlimit, clock_gettime, poll or select;
 *   ERRNO  the errno it fails with, by name (EIO, EINTR, EAGAIN, ...; see
 *          errno_names below) or number; EIO when not given; for write
 *          only, SHORT: the call does not fail but writes only the first
 *          half of what it is given (at least 1 byte), the short write a
 *          nearly full send buffer makes;
 *   @N     only the Nth call to CALL fails (1 is the first); @N+: the Nth
 *          and every later one. Without @N, every call fails. Writes to
 *          descriptors 1 and 2 (the program's own output) are not counted.
 * A failing call returns -1 (NULL for malloc, calloc and fopen) with that
 * errno, without doing anything, except close(): the descriptor is closed
 * and then the error reported, as Linux does (after close() fails with EIO
 * or EINTR, the descriptor is gone all the same).
 *
 * Only the calls the program makes itself are counted and failed, not those
 * the C library makes on its own behalf (stdio allocating a buffer): so
 * malloc@2 is the program's second malloc(), whatever printf did before.
 * (In a sanitizer build, the sanitizer's own wrappers of these calls count
 * as the program's: they live in it, or call straight through.)
 *
 * FAIL_NOFILE_ABOVE=N makes setrlimit(RLIMIT_NOFILE, ...) fail with EINVAL
 * whenever it asks for a soft limit above N, as macOS's does above its own
 * cap (kern.maxfilesperproc), however high the hard limit says it may go.
 *
 * FAIL_PROGRAM=NAME, when set, keeps the rules for the program whose name
 * (the last part of its argv[0]) is NAME: every other process that inherits
 * the preload, such as the shell of a wrapper script or valgrind's launcher
 * on the way to the program, runs untouched.
 *
 * A malformed FAIL_CALL ends the program at its first interposed call with
 * status 125 and a line on stderr, so a typo in a test cannot pass quietly.
 * Linux and glibc (RTLD_NEXT, dladdr, getauxval, and glibc's declarations
 * of the socket calls are GNU C): built with -std=gnu11, a test tool never
 * linked into a stage.
 */
/* NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
#define _GNU_SOURCE /* for RTLD_NEXT and dladdr */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* One rule of FAIL_CALL. */
struct rule {
    unsigned long nth;   /* 0: every call; else the Nth (and later: from) */
    unsigned long calls; /* calls to it seen so far */
    int err;             /* the errno it fails with */
    bool from;           /* @N+: the Nth and every later one */
    char call[16];       /* the call's name */
};

#define MAX_RULES 8

static struct rule rules[MAX_RULES];
static size_t nrules;
static bool parsed;

/* Not an errno (those stop at 4095): write:SHORT, a short write. */
#define SHORT_WRITE 4096

/* The errno names a test may write; any other errno by its number. */
static const struct {
    const char *name;
    int value;
} errno_names[] = {
    {"EIO", EIO},
    {"EINTR", EINTR},
    {"EAGAIN", EAGAIN},
    {"EBADF", EBADF},
    {"EINVAL", EINVAL},
    {"ENOMEM", ENOMEM},
    {"ENOBUFS", ENOBUFS},
    {"EMFILE", EMFILE},
    {"ENFILE", ENFILE},
    {"ENOENT", ENOENT},
    {"EACCES", EACCES},
    {"EPERM", EPERM},
    {"EPROTO", EPROTO},
    {"ECONNABORTED", ECONNABORTED},
    {"ECONNRESET", ECONNRESET},
    {"EPIPE", EPIPE},
    {"ENOTBLK", ENOTBLK},
    {"SHORT", SHORT_WRITE},
};

/* The calls this library stands in for, to catch a misspelt rule. */
static const char *const known_calls[] = {
    "socket",    "setsockopt",    "getsockopt", "getsockname", "getpeername",
    "bind",      "listen",        "accept",     "sigaction",   "close",
    "read",      "write",         "fcntl",      "pipe",        "open",
    "fopen",     "readlink",      "malloc",     "calloc",      "getrlimit",
    "setrlimit", "clock_gettime", "poll",       "select",      "epoll_create1",
    "epoll_ctl", "epoll_wait",
};

/* Says why FAIL_CALL is malformed and ends the program (status 125). */
static _Noreturn void bad_rule(const char *text)
{
    static const char head[] = "libfail: bad FAIL_CALL rule: ";

    (void)!write(STDERR_FILENO, head, sizeof head - 1);
    (void)!write(STDERR_FILENO, text, strlen(text));
    (void)!write(STDERR_FILENO, "\n", 1);
    _exit(125);
}

/* Reads the errno of a rule: a name from the table, or a number. */
static int parse_errno(const char *text, size_t len, const char *rule)
{
    char *end;
    long value;

    for (size_t i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++)
        if (strlen(errno_names[i].name) == len &&
            strncmp(errno_names[i].name, text, len) == 0)
            return errno_names[i].value;
    value = strtol(text, &end, 10);
    if (end != text + len || value <= 0 || value > 4095)
        bad_rule(rule);
    return (int)value;
}

/* Reads one rule, rule[0..len), into *r. */
static void parse_rule(const char *rule, size_t len, struct rule *r)
{
    char text[64];
    const char *at, *colon;
    size_t name_len, i;

    if (len == 0 || len >= sizeof text) {
        bad_rule(rule);
        return; /* (not reached: for the static analysers) */
    }
    memcpy(text, rule, len);
    text[len] = '\0';
    at = strchr(text, '@');
    colon = strchr(text, ':');
    name_len = strcspn(text, ":@");
    if (name_len == 0 || name_len >= sizeof r->call) {
        bad_rule(text);
        return; /* (not reached: for the static analysers) */
    }
    memcpy(r->call, text, name_len);
    r->call[name_len] = '\0';
    for (i = 0; i < sizeof known_calls / sizeof known_calls[0]; i++)
        if (strcmp(known_calls[i], r->call) == 0)
            break;
    if (i == sizeof known_calls / sizeof known_calls[0])
        bad_rule(text);
    r->err = EIO;
    if (colon != NULL) {
        const char *e = colon + 1;
        size_t elen = at != NULL && at > colon ? (size_t)(at - e) : strlen(e);
        r->err = parse_errno(e, elen, text);
        if (r->err == SHORT_WRITE && strcmp(r->call, "write") != 0)
            bad_rule(text);
    }
    if (at != NULL) {
        char *end;
        r->nth = strtoul(at + 1, &end, 10);
        r->from = *end == '+';
        if (r->from)
            end++;
        if (r->nth == 0 || end == at + 1 || (*end != '\0' && *end != ':'))
            bad_rule(text);
    }
}

/* FAIL_NOFILE_ABOVE, or 0 when not set. */
static unsigned long long nofile_cap;

/* Reads FAIL_CALL into rules[], once, when the library is loaded. Calls
 * made before (by the loader, or a sanitizer's start-up, which may come
 * before the environment is there to read) are never the program's own. */
__attribute__((constructor)) static void parse_rules(void)
{
    const char *spec = getenv("FAIL_CALL");
    const char *only = getenv("FAIL_PROGRAM");
    const char *cap = getenv("FAIL_NOFILE_ABOVE");

    parsed = true;
    /* glibc sets program_invocation_short_name from argv[0]. */
    if (only != NULL && strcmp(only, program_invocation_short_name) != 0)
        return;
    if (cap != NULL) {
        char *end;
        nofile_cap = strtoull(cap, &end, 10);
        if (end == cap || *end != '\0')
            bad_rule(cap);
    }
    while (spec != NULL && *spec != '\0') {
        size_t len = strcspn(spec, ",");
        if (nrules == MAX_RULES)
            bad_rule(spec);
        parse_rule(spec, len, &rules[nrules++]);
        spec += len;
        if (*spec == ',')
            spec++;
    }
}

/* True when the code at address ret is in the program itself, not in a
 * library (the C library calling malloc for stdio, say). */
static bool in_program(const void *ret)
{
    static const void *base;
    Dl_info info;

    if (base == NULL) {
        /* The program's entry point is in the program: its base is ours. */
        if (dladdr((const void *)getauxval(AT_ENTRY), &info) == 0)
            return true;
        base = info.dli_fbase;
    }
    return dladdr(ret, &info) != 0 && info.dli_fbase == base;
}

/* True when this call (to CALL, made from address ret) is to fail: errno is
 * then set to the rule's errno. */
static bool failing(const char *call, const void *ret)
{
    bool fail = false;
    int err = 0;

    if (!parsed)
        return false;
    for (size_t i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        if (strcmp(r->call, call) != 0 || !in_program(ret))
            continue;
        r->calls++;
        if (r->nth == 0 || r->calls == r->nth ||
            (r->from && r->calls > r->nth)) {
            fail = true;
            err = r->err;
        }
    }
    if (fail)
        errno = err;
    return fail;
}

/* Where the interposed function was called from. */
#define CALLER __builtin_return_address(0)

/* The next definition of NAME after this library's: the C library's own (or
 * a sanitizer's wrapper of it). POSIX's way of turning dlsym's void * into a
 * function pointer is to copy the pointer's bytes: *(void **)&real = ... */
static void *next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

/* The stand-ins. Their parameters are named for this file, not with glibc's
 * reserved names (__fd, __buf), hence the NOLINT. */
/* NOLINTBEGIN(readability-inconsistent-declaration-parameter-name) */
int socket(int domain, int type, int protocol)
{
    int (*real)(int, int, int);

    if (failing("socket", CALLER))
        return -1;
    *(void **)&real = next("socket");
    return real(domain, type, protocol);
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    int (*real)(int, int, int, const void *, socklen_t);

    if (failing("setsockopt", CALLER))
        return -1;
    *(void **)&real = next("setsockopt");
    return real(fd, level, name, val, len);
}

int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    int (*real)(int, int, int, void *, socklen_t *);

    if (failing("getsockopt", CALLER))
        return -1;
    *(void **)&real = next("getsockopt");
    return real(fd, level, name, val, len);
}

int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    int (*real)(int, struct sockaddr *, socklen_t *);

    if (failing("getsockname", CALLER))
        return -1;
    *(void **)&real = next("getsockname");
    return real(fd, addr, len);
}

int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    int (*real)(int, struct sockaddr *, socklen_t *);

    if (failing("getpeername", CALLER))
        return -1;
    *(void **)&real = next("getpeername");
    return real(fd, addr, len);
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    int (*real)(int, const struct sockaddr *, socklen_t);

    if (failing("bind", CALLER))
        return -1;
    *(void **)&real = next("bind");
    return real(fd, addr, len);
}

int listen(int fd, int backlog)
{
    int (*real)(int, int);

    if (failing("listen", CALLER))
        return -1;
    *(void **)&real = next("listen");
    return real(fd, backlog);
}

/* A failed accept() leaves the connection in the queue: the next call takes
 * it, as after a real transient error. */
int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    int (*real)(int, struct sockaddr *, socklen_t *);

    if (failing("accept", CALLER))
        return -1;
    *(void **)&real = next("accept");
    return real(fd, addr, len);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    int (*real)(int, const struct sigaction *, struct sigaction *);

    if (failing("sigaction", CALLER))
        return -1;
    *(void **)&real = next("sigaction");
    return real(sig, act, old);
}

/* The descriptor is closed even when the call "fails", as on Linux. */
int close(int fd)
{
    int (*real)(int);
    bool fail = failing("close", CALLER);
    int err = errno;

    *(void **)&real = next("close");
    if (!fail)
        return real(fd);
    (void)real(fd);
    errno = err;
    return -1;
}

ssize_t read(int fd, void *buf, size_t len)
{
    ssize_t (*real)(int, void *, size_t);

    if (failing("read", CALLER))
        return -1;
    *(void **)&real = next("read");
    return real(fd, buf, len);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    ssize_t (*real)(int, const void *, size_t);
    int saved = errno;

    /* The program's own output (stdout, stderr) is not what a write rule
     * is about, and is neither counted nor failed: stage 6 writes its
     * narration once a round, in between the writes to its clients. */
    if (fd > STDERR_FILENO && failing("write", CALLER)) {
        if (errno != SHORT_WRITE)
            return -1;
        errno = saved;
        len = len > 1 ? len / 2 : len;
    }
    *(void **)&real = next("write");
    return real(fd, buf, len);
}

/* fcntl's third argument is an int or a pointer, by command; glibc's own
 * fcntl passes it on as a void *, and so does this one. */
int fcntl(int fd, int cmd, ...)
{
    int (*real)(int, int, void *);
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (failing("fcntl", CALLER))
        return -1;
    *(void **)&real = next("fcntl");
    return real(fd, cmd, arg);
}

/* NOLINTNEXTLINE(readability-non-const-parameter): pipe() fills it */
int pipe(int fds[2])
{
    int (*real)(int *);

    if (failing("pipe", CALLER))
        return -1;
    *(void **)&real = next("pipe");
    return real(fds);
}

int open(const char *path, int flags, ...)
{
    int (*real)(const char *, int, ...);
    mode_t mode = 0;

    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    if (failing("open", CALLER))
        return -1;
    *(void **)&real = next("open");
    return real(path, flags, mode);
}

FILE *fopen(const char *path, const char *mode)
{
    FILE *(*real)(const char *, const char *);

    if (failing("fopen", CALLER))
        return NULL;
    *(void **)&real = next("fopen");
    return real(path, mode);
}

ssize_t readlink(const char *path, char *buf, size_t size)
{
    ssize_t (*real)(const char *, char *, size_t);

    if (failing("readlink", CALLER))
        return -1;
    *(void **)&real = next("readlink");
    return real(path, buf, size);
}

/* While malloc or calloc is being looked up, dlsym may ask for memory
 * itself; it copes with NULL, so that is what it gets. */
static bool resolving;

void *malloc(size_t size)
{
    static void *(*real)(size_t);

    if (real == NULL) {
        if (resolving)
            return NULL;
        resolving = true;
        *(void **)&real = next("malloc");
        resolving = false;
    }
    if (failing("malloc", CALLER))
        return NULL;
    return real(size);
}

void *calloc(size_t n, size_t size)
{
    static void *(*real)(size_t, size_t);

    if (real == NULL) {
        if (resolving)
            return NULL;
        resolving = true;
        *(void **)&real = next("calloc");
        resolving = false;
    }
    if (failing("calloc", CALLER))
        return NULL;
    return real(n, size);
}

int getrlimit(__rlimit_resource_t resource, struct rlimit *rl)
{
    int (*real)(__rlimit_resource_t, struct rlimit *);

    if (failing("getrlimit", CALLER))
        return -1;
    *(void **)&real = next("getrlimit");
    return real(resource, rl);
}

int setrlimit(__rlimit_resource_t resource, const struct rlimit *rl)
{
    int (*real)(__rlimit_resource_t, const struct rlimit *);

    if (failing("setrlimit", CALLER))
        return -1;
    if (nofile_cap != 0 && resource == RLIMIT_NOFILE &&
        rl->rlim_cur > nofile_cap) {
        errno = EINVAL;
        return -1;
    }
    *(void **)&real = next("setrlimit");
    return real(resource, rl);
}

int clock_gettime(clockid_t clock, struct timespec *ts)
{
    int (*real)(clockid_t, struct timespec *);

    if (failing("clock_gettime", CALLER))
        return -1;
    *(void **)&real = next("clock_gettime");
    return real(clock, ts);
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    int (*real)(struct pollfd *, nfds_t, int);

    if (failing("poll", CALLER))
        return -1;
    *(void **)&real = next("poll");
    return real(fds, n, timeout);
}

int select(int n, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    int (*real)(int, fd_set *, fd_set *, fd_set *, struct timeval *);

    if (failing("select", CALLER))
        return -1;
    *(void **)&real = next("select");
    return real(n, rd, wr, ex, tv);
}
int epoll_create1(int flags)
{
    int (*real)(int);

    if (failing("epoll_create1", CALLER))
        return -1;
    *(void **)&real = next("epoll_create1");
    return real(flags);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    int (*real)(int, int, int, struct epoll_event *);

    if (failing("epoll_ctl", CALLER))
        return -1;
    *(void **)&real = next("epoll_ctl");
    return real(epfd, op, fd, ev);
}

int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
    int (*real)(int, struct epoll_event *, int, int);

    if (failing("epoll_wait", CALLER))
        return -1;
    *(void **)&real = next("epoll_wait");
    return real(epfd, evs, max, timeout);
}
/* NOLINTEND(readability-inconsistent-declaration-parameter-name) */
