/*
 * stage5_nonblock - lesson 5: non-blocking sockets serve everyone, at a price.
 *
 * What this stage adds to stage 4: O_NONBLOCK, set with fcntl() on the
 * listener and on every client. accept(), read() and write() then never
 * sleep: when there is nothing to take (or no room to give), they fail at once
 * with EAGAIN (also spelled EWOULDBLOCK). One loop tries, over and over,
 * accept() and then every client's read and pending write, so every client is
 * served at once and none can hold up another. The price: the loop never
 * sleeps, so even with nothing to do the process keeps one CPU at 100%.
 * Stage 6 keeps the non-blocking sockets and lets poll() do the waiting.
 *
 * Options: -m (clients at once); -N leaves Nagle's algorithm on, to compare
 * (F46: every client gets TCP_NODELAY otherwise, as in stage 4).
 *
 * Run it:    bin/stage5_nonblock
 * Watch it:  `nc 127.0.0.1 6969` in two terminals: both are echoed at once.
 *            `top -p PID` while nobody sends: 100% CPU. The narration counts
 *            the idle spin every second. `grep flags /proc/PID/fdinfo/3`: the
 *            04000 bit is O_NONBLOCK. `strace -c -p PID` for a second: a
 *            storm of accept() and read() calls failing with EAGAIN.
 * Read:      man 2 fcntl, man 2 accept (EAGAIN), man 7 socket, man 3 errno,
 *            man 7 tcp (TCP_NODELAY)
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAXCLIENTS 1000

/*
 * One connected client. buf holds what the client sent that has not been
 * written back yet: the bytes from buf[start] up to buf[end]. The server
 * reads from a client only when its buf is empty, so no client can make the
 * server hold more than one buffer for it, however fast it sends.
 */
struct client {
    int fd;
    char peer[ADDR_TEXT_MAX]; /* "127.0.0.1:54012", for the narration */
    char buf[16384];
    size_t start, end; /* buf[start..end) is owed to the client */
    bool eof;          /* the client ended its side: close once buf is empty */
    bool done;         /* finished or failed: close after this pass */
    long long echoed;  /* bytes written back, for the narration */
};

/* What the loop counts, so the narration can show the spin. */
struct spin {
    unsigned long long rounds; /* times round the loop */
    unsigned long long eagain; /* calls that returned EAGAIN/EWOULDBLOCK */
    long long moved;           /* bytes echoed */
};

/* The stage's own options. */
struct settings {
    unsigned long maxclients; /* -m */
    bool nagle;               /* -N: leave Nagle's algorithm on */
};

static const struct stage_option own_options[] = {
    {'m', "MAXCLIENTS",
     "clients served at once; one more is closed at once "
     "(default 1000)"},
    {'N', NULL,
     "keep Nagle's algorithm: do not set TCP_NODELAY on clients (F46)"},
    {0, NULL, NULL},
};

static const char *set_option(char letter, const char *arg, void *ctx)
{
    struct settings *s = ctx;

    if (letter == 'm' && parse_number(arg, 1, 1000000, &s->maxclients) == -1)
        return "a whole number from 1 to 1000000";
    if (letter == 'N')
        s->nagle = true;
    return NULL;
}

/* Sets O_NONBLOCK on fd, keeping its other status flags: read them with
 * F_GETFL, add the bit, write them back with F_SETFL. Returns 0 or -1. */
static int set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags == -1)
        return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static bool would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK;
}

/* True for accept() errors that concern only the connection being accepted
 * (it was reset or failed before we took it): the server goes on. Linux also
 * passes pending network errors of the new connection through accept(). */
static bool accept_error_is_transient(int err)
{
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM: /* a firewall rule refused it (Linux) */
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENOPROTOOPT:
    case EOPNOTSUPP:
#ifdef EHOSTDOWN
    case EHOSTDOWN:
#endif
        return true;
    default:
        return false;
    }
}

/* True for accept() errors that mean "out of a resource for now": the
 * connection stays queued, so retrying at once would spin. */
static bool accept_error_is_exhaustion(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Takes every connection waiting in the queue, until accept() says EAGAIN.
 * A client over the -m limit is closed at once: it sees end of stream at
 * once instead of hanging, and the others are not affected. With nodelay,
 * each client gets TCP_NODELAY. */
static void accept_all(int listener, struct client **clients, size_t *count,
                       size_t max, bool nodelay, struct spin *spin)
{
    static time_t last_warned; /* exhaustion repeats every round: once a
                                  second is enough to tell */
    int on = 1;

    for (;;) {
        struct sockaddr_storage peer;
        socklen_t peerlen = sizeof peer;
        struct client *c;
        int fd = accept(listener, (struct sockaddr *)&peer, &peerlen);

        if (fd == -1) {
            int err = errno;
            if (would_block(err)) {
                spin->eagain++; /* the queue is empty: the usual case */
                return;
            }
            if (accept_error_is_transient(err)) {
                warn_errno(err, "accept (that connection only; going on)");
                continue;
            }
            if (accept_error_is_exhaustion(err)) {
                /* The connection stays queued and the next round tries
                 * again: a spin, like everything here. Stage 6 cures it. */
                if (time(NULL) != last_warned) {
                    last_warned = time(NULL);
                    warn_errno(err, "accept (will retry)");
                }
                return;
            }
            die("accept");
        }
        /* On Linux an accepted socket does not inherit O_NONBLOCK from the
         * listener (on the BSDs it does): set it on every client. */
        if (set_nonblocking(fd) == -1) {
            warn_errno(errno, "fcntl O_NONBLOCK on fd %d", fd);
            if (close(fd) == -1)
                warn_errno(errno, "close fd %d", fd);
            continue;
        }
        if (*count == max) {
            char text[ADDR_TEXT_MAX];
            narrate("client %s turned away: the -m limit of %zu is reached; "
                    "closing fd %d at once",
                    addr_format((struct sockaddr *)&peer, peerlen, text,
                                sizeof text),
                    max, fd);
            if (close(fd) == -1)
                warn_errno(errno, "close fd %d", fd);
            continue;
        }
        /* Nagle's algorithm holds back a small segment while an earlier
         * one is unacknowledged, and the client delays its ACK hoping to
         * send it along with data of its own: the second of two small
         * echoes can wait for that delayed ACK, tens of milliseconds each
         * time (F46). An echo server writes back what it read as soon as it
         * has it, and has nothing to add, so it turns Nagle off. A failure
         * costs only speed: the client is served all the same. */
        if (nodelay &&
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == -1)
            warn_errno(errno, "TCP_NODELAY on fd %d (going on without)", fd);
        /* Urgent data (MSG_OOB) stays in the stream, in its place, only
         * with SO_OOBINLINE; without it the echo would lose it (F45). */
        if (setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &on, sizeof on) == -1)
            warn_errno(errno, "SO_OOBINLINE on fd %d (going on without)", fd);
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            warn_errno(errno, "calloc for a client; closing fd %d", fd);
            if (close(fd) == -1)
                warn_errno(errno, "close fd %d", fd);
            continue;
        }
        c->fd = fd;
        addr_format((struct sockaddr *)&peer, peerlen, c->peer, sizeof c->peer);
        clients[(*count)++] = c;
        narrate("client %s connected on fd %d (clients: %zu)", c->peer, fd,
                *count);
    }
}

/*
 * One turn for one client: read if nothing is owed to it, then write what is
 * owed, taking what the kernel accepts now. Never waits: EAGAIN means "not
 * now", and the next round tries again. An error ends only this client.
 */
static void serve(struct client *c, struct spin *spin)
{
    ssize_t n;

    if (c->start == c->end && !c->eof) {
        n = read(c->fd, c->buf, sizeof c->buf);
        if (n > 0) {
            c->start = 0;
            c->end = (size_t)n;
        } else if (n == 0) {
            c->eof = true; /* end of stream; what is owed is still sent */
        } else if (would_block(errno)) {
            spin->eagain++;
        } else if (errno != EINTR) {
            warn_errno(errno, "read from %s on fd %d", c->peer, c->fd);
            c->done = true;
            return;
        }
    }
    if (c->start < c->end) {
        /* A short write is normal here: keep the rest for the next round. */
        n = write(c->fd, c->buf + c->start, c->end - c->start);
        if (n >= 0) {
            c->start += (size_t)n;
            c->echoed += n;
            spin->moved += n;
            if (c->start == c->end)
                c->start = c->end = 0;
        } else if (would_block(errno)) {
            spin->eagain++;
        } else if (errno != EINTR) {
            warn_errno(errno, "write to %s on fd %d", c->peer, c->fd);
            c->done = true;
            return;
        }
    }
    if (c->eof && c->start == c->end)
        c->done = true;
}

/* Closes and frees the clients marked done, after the scan: removing them
 * while walking the array would skip the one moved into the hole. */
static void close_finished(struct client **clients, size_t *count)
{
    size_t i = 0;

    while (i < *count) {
        struct client *c = clients[i];
        if (!c->done) {
            i++;
            continue;
        }
        if (close(c->fd) == -1)
            warn_errno(errno, "close fd %d", c->fd);
        narrate("client %s on fd %d %s: %lld bytes echoed (clients: %zu)",
                c->peer, c->fd, c->eof ? "left" : "ended by an error",
                c->echoed, *count - 1);
        free(c);
        clients[i] = clients[--*count]; /* the last one fills the hole */
    }
}

/* About once a second, when nothing was echoed in it, says how hard the loop
 * spun for nothing, then starts counting again. */
static void report_spin(struct spin *spin, struct timespec *since)
{
    struct timespec now;

    if (clock_gettime(CLOCK_MONOTONIC, &now) == -1)
        die("clock_gettime");
    if (now.tv_sec - since->tv_sec < 1 ||
        (now.tv_sec - since->tv_sec == 1 && now.tv_nsec < since->tv_nsec))
        return;
    if (spin->moved == 0)
        narrate("idle second: the loop went round %llu times and %llu calls "
                "returned EAGAIN; nothing was echoed (a CPU kept busy for "
                "nothing: see top)",
                spin->rounds, spin->eagain);
    *spin = (struct spin){0, 0, 0};
    *since = now;
}

int main(int argc, char **argv)
{
    struct settings set = {DEFAULT_MAXCLIENTS, false};
    const struct stage_info info = {
        .name = "stage5_nonblock",
        .summary = "an echo server for every client at once, by trying every "
                   "non-blocking socket over and over",
        .standard = OPT_ADDR | OPT_PORT | OPT_BACKLOG | OPT_QUIET | OPT_STEP |
                    OPT_NOREUSE,
        .extra = own_options,
        .on_extra = set_option,
        .ctx = &set,
    };
    struct options opt;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char text[ADDR_TEXT_MAX], host[ADDR_TEXT_MAX];
    unsigned port;
    int fd, on = 1;
    struct sigaction ignore;
    struct client **clients;
    size_t count = 0;
    struct spin spin = {0, 0, 0};
    struct timespec since;

    options_parse(&opt, &info, argc, argv);
    exit_on_signals();
    /* options_parse has checked the literal already; this cannot fail. */
    if (addr_parse(opt.addr, opt.port, &addr, &addrlen) == -1)
        usage_error("-a %s: not an address literal", opt.addr);
    addr_format((struct sockaddr *)&addr, addrlen, text, sizeof text);

    /* Writing to a connection the peer has closed raises SIGPIPE, whose
     * default action ends the process: one vanished client would kill the
     * server. Ignored, the same mistake shows up as EPIPE from write(). */
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    if (sigaction(SIGPIPE, &ignore, NULL) == -1)
        die("sigaction SIGPIPE");

    step("socket() creates the endpoint (stage 1)");
    fd = socket(addr.ss_family, SOCK_STREAM, 0);
    if (fd == -1)
        die("socket");
    narrate("socket() returned descriptor %d", fd);

    /* SO_REUSEADDR lets bind() succeed while connections that used this port
     * before are still in TIME_WAIT, so a restarted server comes back at
     * once. It does not let two live servers share a port: that is still
     * EADDRINUSE. */
    if (opt.reuseaddr) {
        step("setsockopt(SO_REUSEADDR) allows binding a port that has "
             "TIME_WAIT connections");
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == -1)
            die("setsockopt SO_REUSEADDR");
        narrate("SO_REUSEADDR set: a restart will not wait for TIME_WAIT");
    } else {
        narrate("SO_REUSEADDR not set (-R): bind() fails with EADDRINUSE if "
                "this port still has connections in TIME_WAIT");
    }

    step("bind() asks for %s", text);
    if (bind(fd, (struct sockaddr *)&addr, addrlen) == -1) {
        int err = errno;
        warn_errno(err, "bind %s", text);
        bind_hint(err, opt.addr, opt.port);
        exit(1);
    }

    /* Ask the kernel what it actually gave us: with port 0 it chose one. */
    addrlen = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &addrlen) == -1)
        die("getsockname");
    addr_format((struct sockaddr *)&addr, addrlen, text, sizeof text);
    narrate("bound to %s", text);

    /* listen() makes the socket passive: it will never connect, read or
     * write; from now on it only produces connected sockets. */
    step("listen(%d) makes the socket passive; the kernel starts queueing "
         "connections",
         opt.backlog);
    if (listen(fd, opt.backlog) == -1)
        die("listen %s backlog %d", text, opt.backlog);

    /* The listener too: accept() must say EAGAIN instead of sleeping when
     * the queue is empty, or one quiet moment would stop the whole loop. */
    step("fcntl(F_SETFL, O_NONBLOCK) on the listener: accept() will return "
         "EAGAIN instead of sleeping");
    if (set_nonblocking(fd) == -1)
        die("fcntl O_NONBLOCK on fd %d", fd);
    ready_line("listening on", (struct sockaddr *)&addr, addrlen);
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers */
    clients = calloc(set.maxclients, sizeof *clients);
    if (clients == NULL)
        die("calloc for %lu clients", set.maxclients);
    if (set.nagle)
        narrate("-N: Nagle's algorithm stays on: a small echo may wait for "
                "the client's delayed ACK");
    else
        narrate("TCP_NODELAY on every client: an echo goes out at once, not "
                "held back by Nagle's algorithm (-N keeps it)");
    port = addr_for_clients((struct sockaddr *)&addr, host, sizeof host);
    narrate("try: nc %s %u in two terminals: both are echoed at once; then "
            "watch this process in top: 100%% CPU while nobody sends",
            host, port);
    narrate("client limit (-m): %lu; stop with Ctrl-C or: kill %ld",
            set.maxclients, (long)getpid());
    if (clock_gettime(CLOCK_MONOTONIC, &since) == -1)
        die("clock_gettime");

    /* The busy loop: try everything, never sleep. */
    for (;;) {
        spin.rounds++;
        accept_all(fd, clients, &count, set.maxclients, !set.nagle, &spin);
        for (size_t i = 0; i < count; i++)
            serve(clients[i], &spin);
        close_finished(clients, &count);
        if (narrating())
            report_spin(&spin, &since);
    }
}
