/*
 * epoll_echo - the "where next" reference for make bench. NOT a stage of
 * the course: the yardstick that stage 6 is measured against.
 *
 * The best plain single-threaded design: one epoll instance, level
 * triggered, non-blocking sockets, one read per ready connection per round,
 * echoed at once; whatever the kernel does not take is kept and the
 * connection then waits for EPOLLOUT only (no more reading until it drains,
 * so a client that never reads cannot make the server hold more than one
 * read's worth for it). The difference from stage 6 is the one the bench
 * measures: poll() hands the kernel the whole watch list on every call and
 * the kernel looks at every entry, while epoll keeps the list in the kernel
 * and returns only the descriptors that are ready.
 *
 * Run it:    build/bench/epoll_echo -p 0      (make bench builds it)
 * Options:   -a ADDR, -p PORT, -q, -h, as the stages (CONTRIBUTING.md). It
 *            prints the same readiness line and ends with status 0 on
 *            SIGINT or SIGTERM.
 * Read:      man 7 epoll, man 2 epoll_ctl, man 2 epoll_wait.
 *
 * Linux only: elsewhere it builds into a program that says so and exits 1.
 *
 * Fault builds, for the bench's own tests (tests/bench.bats): compiled with
 * -DFLIP_AT=N it flips the lowest bit of byte N of every connection's echo;
 * with -DCUT_AT=N it echoes nothing from byte N on (the rest goes missing).
 * The load generator must notice either, and say where.
 */
#include "common.h"

#include <stdio.h>

#ifdef __linux__

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define READ_SIZE 65536 /* the most one read() takes */
#define EVENTS    256   /* events taken from one epoll_wait() */

/* One connection. out is NULL while nothing is owed; otherwise it holds
 * out[start..end), the part of the last read the kernel did not take. */
struct conn {
    int fd;
    bool eof;        /* the client shut down its sending side */
    char *out;       /* NULL, or what is owed (malloc'd) */
    size_t start;    /* out[start..end) is owed */
    size_t end;      /* both 0 while out is NULL */
    uint64_t echoed; /* bytes of its stream seen so far (fault builds) */
};

/* O_NONBLOCK on, the other status flags kept. Returns 0 or -1. */
static int nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    return flags == -1 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static bool would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* Tells epoll what c waits for now: output to drain, else input. */
static int watch(int ep, struct conn *c, int op)
{
    struct epoll_event ev = {.events = c->out != NULL ? EPOLLOUT : EPOLLIN,
                             .data.ptr = c};

    return epoll_ctl(ep, op, c->fd, &ev);
}

static void drop(struct conn *c)
{
    /* close() also takes the descriptor out of the epoll set. */
    if (close(c->fd) == -1)
        warn_errno(errno, "close fd %d", c->fd);
    free(c->out);
    free(c);
}

/* The fault builds: spoil buf[0..n), which is bytes echoed..echoed + n of
 * the connection's stream; returns how many of them to echo. A plain build
 * returns n and touches nothing. */
/* NOLINTNEXTLINE(readability-non-const-parameter): FLIP_AT writes buf */
static size_t spoil(const struct conn *c, char *buf, size_t n)
{
#if defined(FLIP_AT)
    if (c->echoed <= FLIP_AT && FLIP_AT < c->echoed + n)
        buf[FLIP_AT - c->echoed] ^= 1;
#elif defined(CUT_AT)
    (void)buf;
    if (c->echoed + n > CUT_AT)
        n = c->echoed < CUT_AT ? (size_t)(CUT_AT - c->echoed) : 0;
#else
    (void)c;
    (void)buf;
#endif
    return n;
}

/* Writes out[start..end) as far as the kernel takes it. Returns 0, or -1
 * when the connection failed. */
static int flush_out(struct conn *c)
{
    ssize_t w = write(c->fd, c->out + c->start, c->end - c->start);

    if (w == -1)
        return would_block(errno) ? 0 : -1;
    c->start += (size_t)w;
    if (c->start == c->end) {
        free(c->out);
        c->out = NULL;
        c->start = c->end = 0;
    }
    return 0;
}

/* One read, echoed at once; the rest kept. Returns 0, or -1 when the
 * connection failed. */
static int read_echo(struct conn *c, char *buf)
{
    ssize_t n = read(c->fd, buf, READ_SIZE);
    size_t len, sent = 0;

    if (n == 0) {
        c->eof = true;
        return 0;
    }
    if (n == -1)
        return would_block(errno) ? 0 : -1;
    len = spoil(c, buf, (size_t)n);
    c->echoed += (uint64_t)n;
    if (len > 0) {
        ssize_t w = write(c->fd, buf, len);
        if (w == -1 && !would_block(errno))
            return -1;
        if (w > 0)
            sent = (size_t)w;
    }
    if (sent < len) {
        c->out = malloc(len - sent);
        if (c->out == NULL)
            return -1;
        memcpy(c->out, buf + sent, len - sent);
        c->start = 0;
        c->end = len - sent;
    }
    return 0;
}

/* c is ready (events from epoll): serve it; closes it when it is done or
 * failed. */
static void serve(int ep, struct conn *c, uint32_t events, char *buf)
{
    bool had_out = c->out != NULL;
    int rc;

    if (had_out)
        rc = flush_out(c);
    else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        rc = read_echo(c, buf);
    else
        rc = 0;
    if (rc == -1 && errno != ECONNRESET && errno != EPIPE)
        warn_errno(errno, "fd %d", c->fd);
    if (rc == -1 || (c->eof && c->out == NULL)) {
        drop(c);
        return;
    }
    if (had_out != (c->out != NULL) && watch(ep, c, EPOLL_CTL_MOD) == -1) {
        warn_errno(errno, "epoll_ctl MOD fd %d", c->fd);
        drop(c);
    }
}

/* Accepts every connection waiting on the listener. */
static void accept_all(int ep, int listener)
{
    for (;;) {
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): epoll keeps c */
        struct conn *c;
        int fd = accept(listener, NULL, NULL);

        if (fd == -1) {
            if (!would_block(errno) && errno != ECONNABORTED)
                warn_errno(errno, "accept");
            return;
        }
        c = calloc(1, sizeof *c);
        if (c == NULL || nonblocking(fd) == -1) {
            warn_errno(errno, "setting up fd %d; closing it", fd);
            free(c);
            if (close(fd) == -1)
                warn_errno(errno, "close fd %d", fd);
            continue;
        }
        c->fd = fd;
        if (watch(ep, c, EPOLL_CTL_ADD) == -1) {
            warn_errno(errno, "epoll_ctl ADD fd %d", fd);
            drop(c);
        }
    }
}

int main(int argc, char **argv)
{
    static const struct stage_info info = {
        .name = "epoll_echo",
        .summary = "the epoll() echo server make bench measures stage 6 "
                   "against (a reference, not a stage)",
        .standard = OPT_ADDR | OPT_PORT | OPT_QUIET,
    };
    struct options opt;
    struct sockaddr_storage addr;
    socklen_t len;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    struct epoll_event events[EVENTS];
    static char buf[READ_SIZE];
    int listener, ep, one = 1;

    options_parse(&opt, &info, argc, argv);
    if (addr_parse(opt.addr, opt.port, &addr, &len) == -1)
        usage_error("-a %s: not an IPv4 or IPv6 address literal", opt.addr);
    exit_on_signals();
    listener = socket(addr.ss_family, SOCK_STREAM, 0);
    if (listener == -1)
        die("socket");
    if (setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1)
        die("setsockopt SO_REUSEADDR");
    if (bind(listener, (struct sockaddr *)&addr, len) == -1)
        die("bind %s:%u", opt.addr, opt.port);
    if (listen(listener, DEFAULT_BACKLOG) == -1)
        die("listen");
    if (nonblocking(listener) == -1)
        die("fcntl O_NONBLOCK on the listener");
    len = sizeof addr;
    if (getsockname(listener, (struct sockaddr *)&addr, &len) == -1)
        die("getsockname");
    ep = epoll_create1(0);
    if (ep == -1)
        die("epoll_create1");
    /* The listener's data.ptr is NULL; every connection's is its conn. */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) == -1)
        die("epoll_ctl ADD listener");
    ready_line("listening on", (struct sockaddr *)&addr, len);
    narrate("epoll_echo: the bench's reference server; stop with Ctrl-C");
    for (;;) {
        int n = epoll_wait(ep, events, EVENTS, -1);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL)
                accept_all(ep, listener);
            else
                serve(ep, events[i].data.ptr, events[i].events, buf);
        }
    }
}

#else

int main(void)
{
    fputs("epoll_echo: epoll is Linux-only; the bench's reference server "
          "does not exist on this system\n",
          stderr);
    return 1;
}

#endif
