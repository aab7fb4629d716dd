/*
 * pollcost - what one poll() call costs as the watch list grows (F40):
 * N descriptors watched, N - 1 of them idle TCP connections and one with a
 * byte waiting, for N = 10, 100, 1,000 and 10,000; then the same with
 * epoll_wait() for contrast (Linux only). make bench prints the figures as
 * a table and draws them as the lines of its chart's last panel.
 *
 * usage: pollcost [-Q]
 *
 * The descriptors are what a server holds: the accepted ends of loopback
 * TCP connections. A helper child process opens the client ends (so each
 * process needs one descriptor per connection, as a server and its clients
 * do), sends one byte on its last connection, and waits for this process to
 * close a pipe. The connection that byte arrives on is the ready one; it is
 * never read, so it stays ready, and every call returns at once.
 *
 * poll(fds, N, -1) is timed twice over the same descriptors:
 *
 *   poll             the ready one first in the array. The kernel still
 *                    walks every entry (looks up the descriptor, asks the
 *                    socket whether it is ready); nothing more. This is the
 *                    O(N) floor: no poll() over N descriptors costs less.
 *   poll-ready-last  the ready one last. Until the kernel meets a ready
 *                    descriptor it also puts the process on each socket's
 *                    wait queue, as a call that is about to sleep does, and
 *                    afterwards takes it off them all again: here, all N - 1.
 *
 * epoll_wait(ep, events, 64, -1) over the same set, registered once with
 * epoll_ctl(), takes the one ready descriptor from the kernel's ready list
 * without looking at the others: the flat line.
 *
 * Timing: this process's CPU time (CLOCK_PROCESS_CPUTIME_ID), so time it
 * spends preempted by other programs does not count. Calls go in batches; a
 * batch is first doubled until it lasts 20 ms [-Q: 2 ms], then 9 [-Q: 3]
 * batches are timed. Each row gives the median of the batches' microseconds
 * per call, and the fastest and slowest batch.
 *
 * Output, CSV on stdout: call,n,us_per_call,min_us,max_us,calls,note where
 * call is poll, poll-ready-last or epoll_wait and calls is the batch size.
 * Progress goes to stderr.
 *
 * It raises its soft descriptor limit (the child inherits it) up to the
 * hard one; if that cannot hold 10,000 descriptors and a few more, it says
 * so on stderr and the rows it cannot measure have empty figures and
 * "n/a: ..." as their note. Every wait is bounded (connecting 20 s).
 *
 * Watch it:  strace -c -f build/bench/pollcost      (the poll calls)
 * Read:      man 2 poll, man 7 epoll, man 2 clock_gettime, man 2 setrlimit.
 *
 * Exit status: 0; 1 a call failed or a wait ran out; 2 bad usage.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/epoll.h>
#endif

#define MAX_N    10000 /* the largest watch list */
#define SPARE_FD 16    /* stdio, listener, pipe, epoll and some slack */
#define NS       1000000000LL

static const size_t sizes[] = {10, 100, 1000, MAX_N};
#define NSIZES      (sizeof sizes / sizeof sizes[0])
#define MAX_BATCHES 9

/* The rows' call names, in the order they are measured. */
static const char *const row_names[] = {"poll", "poll-ready-last",
#ifdef __linux__
                                        "epoll_wait"
#endif
};
#define NCALLS (sizeof row_names / sizeof row_names[0])

/* The accepted ends, the ready one last once open_all() is done; and the
 * poll() array built from them. */
static int acc[MAX_N];
static struct pollfd pfds[MAX_N];

static struct {
    long long batch_ns; /* a batch lasts at least this long */
    int batches;        /* batches timed for each row */
} cfg = {20000000, MAX_BATCHES};

/* ---- the helper that holds the client ends ------------------------------ */

/* The child: opens n connections to 127.0.0.1:port, sends one byte on the
 * last, and keeps them all until quit (the read end of a pipe) reaches end
 * of file, that is, until the parent closes the write end or dies. */
static void clients(unsigned port, size_t n, int quit)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = -1;
    char ch;

    for (size_t i = 0; i < n; i++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd == -1 || connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
            perror("pollcost: helper: socket or connect");
            _exit(1);
        }
    }
    if (write(fd, "!", 1) != 1) {
        perror("pollcost: helper: write");
        _exit(1);
    }
    while (read(quit, &ch, 1) == -1 && errno == EINTR)
        ;
    _exit(0);
}

/* Starts the helper with n connections to listener and accepts them into
 * acc[0..n), the ready one last. Returns the helper's PID and sets *quit
 * (close it to end the helper), or -1 after saying why. */
static pid_t open_all(int listener, unsigned port, size_t n, int *quit)
{
    int fds[2];
    pid_t pid;
    size_t ready = n;
    int tmp;

    if (pipe(fds) == -1) {
        perror("pollcost: pipe");
        return -1;
    }
    pid = fork();
    if (pid == -1) {
        perror("pollcost: fork");
        return -1;
    }
    if (pid == 0) {
        (void)close(fds[1]);
        (void)close(listener);
        clients(port, n, fds[0]);
    }
    (void)close(fds[0]);
    *quit = fds[1];
    for (size_t i = 0; i < n; i++) {
        struct pollfd l = {.fd = listener, .events = POLLIN};
        int r = poll(&l, 1, 20000);
        if (r == -1 && errno == EINTR) {
            i--;
            continue;
        }
        acc[i] = r == 1 ? accept(listener, NULL, NULL) : -1;
        if (acc[i] == -1) {
            fprintf(stderr, "pollcost: %zu of %zu connections after %s\n", i, n,
                    r == 1 ? strerror(errno) : "20 s");
            return -1;
        }
    }
    /* Which one has the helper's byte? One poll() over all of them. */
    for (size_t i = 0; i < n; i++)
        pfds[i] = (struct pollfd){.fd = acc[i], .events = POLLIN};
    if (poll(pfds, (nfds_t)n, 20000) == 1)
        for (size_t i = 0; i < n; i++)
            if (pfds[i].revents != 0)
                ready = i;
    if (ready == n) {
        fputs("pollcost: the helper's byte did not come (20 s)\n", stderr);
        return -1;
    }
    tmp = acc[ready];
    acc[ready] = acc[n - 1];
    acc[n - 1] = tmp;
    return pid;
}

/* ---- the timing ---------------------------------------------------------- */

static long long cpu_now(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == -1) {
        perror("pollcost: clock_gettime");
        exit(1);
    }
    return (long long)ts.tv_sec * NS + ts.tv_nsec;
}

/* What one batch runs: calls waits over the set; each must return exactly
 * the one ready descriptor. Returns 0 or -1. */
typedef int batch_fn(void *set, long calls);

/* The poll() array: n entries, the ready one first or last. */
struct poll_set {
    struct pollfd *p;
    size_t n;
};

static int poll_batch(void *set, long calls)
{
    const struct poll_set *s = set;

    for (long i = 0; i < calls; i++) {
        int r = poll(s->p, (nfds_t)s->n, -1);
        if (r != 1) {
            if (r == -1)
                perror("pollcost: poll");
            else
                fprintf(stderr, "pollcost: poll: %d ready, not 1\n", r);
            return -1;
        }
    }
    return 0;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Times run over set and prints the row for call and n. Returns 0 or -1. */
static int measure(const char *call, size_t n, batch_fn *run, void *set)
{
    double us[MAX_BATCHES];
    long calls = 1;

    for (;;) {
        long long t0 = cpu_now(), t;
        if (run(set, calls) == -1)
            return -1;
        t = cpu_now() - t0;
        if (t >= cfg.batch_ns || calls >= 1L << 24)
            break;
        calls *= 2;
    }
    for (int b = 0; b < cfg.batches; b++) {
        long long t0 = cpu_now();
        if (run(set, calls) == -1)
            return -1;
        us[b] = (double)(cpu_now() - t0) / 1000.0 / (double)calls;
    }
    qsort(us, (size_t)cfg.batches, sizeof *us, by_value);
    printf("%s,%zu,%.3f,%.3f,%.3f,%ld,\n", call, n, us[cfg.batches / 2], us[0],
           us[cfg.batches - 1], calls);
    return fflush(stdout) == EOF ? -1 : 0;
}

#ifdef __linux__
struct epoll_set {
    int ep;
};

static int epoll_batch(void *set, long calls)
{
    const struct epoll_set *e = set;
    struct epoll_event ev[64];

    for (long i = 0; i < calls; i++) {
        int r = epoll_wait(e->ep, ev, 64, -1);
        if (r != 1) {
            if (r == -1)
                perror("pollcost: epoll_wait");
            else
                fprintf(stderr, "pollcost: epoll_wait: %d ready, not 1\n", r);
            return -1;
        }
    }
    return 0;
}

/* epoll_wait() over the first n - 1 idle descriptors of acc and the ready
 * one (acc[total - 1]). Returns 0 or -1. */
static int measure_epoll(size_t total, size_t n)
{
    struct epoll_set e = {.ep = epoll_create1(0)};
    int rc = 0;

    if (e.ep == -1) {
        perror("pollcost: epoll_create1");
        return -1;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        int fd = i + 1 < n ? acc[i] : acc[total - 1];
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(e.ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
            perror("pollcost: epoll_ctl");
            rc = -1;
        }
    }
    if (rc == 0)
        rc = measure(row_names[2], n, epoll_batch, &e);
    if (close(e.ep) == -1)
        perror("pollcost: close");
    return rc;
}
#endif

/* ---- the setup ----------------------------------------------------------- */

/* Raises the soft descriptor limit towards want, up to the hard limit.
 * Returns the limit in force. */
static rlim_t raise_limit(rlim_t want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        perror("pollcost: getrlimit");
        exit(1);
    }
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want
                          ? rl.rlim_max
                          : want;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
            perror("pollcost: setrlimit");
            exit(1);
        }
    }
    return rl.rlim_cur;
}

/* A loopback listener on a port the kernel chooses; sets *port. */
static int listen_loopback(unsigned *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd == -1 || bind(fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
        listen(fd, SOMAXCONN) == -1 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) == -1) {
        perror("pollcost: listener");
        exit(1);
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

int main(int argc, char **argv)
{
    struct pollfd *p = pfds;
    int listener, quit = -1, opt, rc = 0, status;
    unsigned port;
    rlim_t limit;
    size_t total = MAX_N;
    pid_t helper;

    while ((opt = getopt(argc, argv, "Q")) != -1) {
        if (opt != 'Q') {
            fputs("usage: pollcost [-Q]\n", stderr);
            return 2;
        }
        cfg.batch_ns = 2000000;
        cfg.batches = 3;
    }
    if (optind != argc) {
        fputs("usage: pollcost [-Q]\n", stderr);
        return 2;
    }
    limit = raise_limit((rlim_t)MAX_N + SPARE_FD);
    if (limit < (rlim_t)MAX_N + SPARE_FD) {
        total =
            limit > (rlim_t)2 * SPARE_FD ? (size_t)limit - SPARE_FD : SPARE_FD;
        fprintf(stderr,
                "pollcost: the descriptor limit is %llu (the hard limit): "
                "%d descriptors need about %d, so only lists of up to %zu "
                "are measured\n",
                (unsigned long long)limit, MAX_N, MAX_N + SPARE_FD, total);
    }
    puts("call,n,us_per_call,min_us,max_us,calls,note");
    listener = listen_loopback(&port);
    fprintf(stderr, "pollcost: opening %zu loopback connections\n", total);
    helper = open_all(listener, port, total, &quit);
    if (helper == -1)
        return 1;
    for (size_t s = 0; s < NSIZES && rc == 0; s++) {
        size_t n = sizes[s];
        struct poll_set set = {.p = p, .n = n};
        if (n > total) {
            for (size_t c = 0; c < NCALLS; c++)
                printf("%s,%zu,,,,,n/a: the descriptor limit (%llu) is too "
                       "low\n",
                       row_names[c], n, (unsigned long long)limit);
            continue;
        }
        fprintf(stderr, "pollcost: %zu descriptors, one ready\n", n);
        /* The ready one first, then n - 1 idle ones; then the other way. */
        p[0] = (struct pollfd){.fd = acc[total - 1], .events = POLLIN};
        for (size_t i = 1; i < n; i++)
            p[i] = (struct pollfd){.fd = acc[i - 1], .events = POLLIN};
        rc = measure(row_names[0], n, poll_batch, &set);
        p[0] = p[n - 1];
        p[n - 1] = (struct pollfd){.fd = acc[total - 1], .events = POLLIN};
        if (rc == 0)
            rc = measure(row_names[1], n, poll_batch, &set);
#ifdef __linux__
        if (rc == 0)
            rc = measure_epoll(total, n);
#endif
    }
    /* Closing the pipe ends the helper, which closes its ends. */
    (void)close(quit);
    if (waitpid(helper, &status, 0) == -1 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fputs("pollcost: the helper did not end with status 0\n", stderr);
        rc = -1;
    }
    for (size_t i = 0; i < total; i++)
        (void)close(acc[i]);
    (void)close(listener);
    return rc == 0 ? 0 : 1;
}
