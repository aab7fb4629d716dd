/*
 * stage4_accept - lesson 4: accept() hands out connections, one at a time.
 *
 * What this stage adds to stage 3: an accept() loop and the echo itself.
 * accept() takes the oldest finished connection off the listener's queue and
 * returns a brand-new descriptor for it; the listening socket stays as it
 * was. This server is iterative and blocking: it echoes one client until that
 * client closes, and only then calls accept() again. While it serves one,
 * every other client waits in the queue, and a client that connects and says
 * nothing holds up everyone. That cost is the lesson; stages 5 and 6 remove it.
 * Options for the lesson's experiments: -k turns on TCP keepalive on every
 * client, so that one that vanishes without a word no longer keeps the server
 * in read() for ever (F29); -L closes every client with SO_LINGER {on, 0}, a
 * reset (F28); -N leaves Nagle's algorithm on, to compare (F46).
 *
 * Run it:    bin/stage4_accept     (bin/stage4_accept -k 7,3,2 -L: both)
 * Watch it:  `nc 127.0.0.1 6969` in two terminals: the first is echoed, the
 *            second waits (its words are queued in the kernel) until the
 *            first leaves. `ss -tn 'sport = :6969'` shows both connections
 *            established; `ls -l /proc/PID/fd` shows only one descriptor per
 *            client being served. `strace -e trace=network,read,write` shows
 *            the server asleep in accept() or read(), and the setsockopt()
 *            calls on each client. With -k, `ss -tno 'sport = :6969'` shows
 *            the server's end of a connection with timer:(keepalive,...).
 *            A client that ends with `nc -N` closes first and keeps
 *            TIME_WAIT (F27); with -L the server answers with a reset, and
 *            `ss -tan state time-wait` stays empty.
 * Read:      man 2 accept, man 2 read, man 2 write, man 2 setsockopt,
 *            man 7 tcp (TCP_NODELAY, TCP_KEEPIDLE), man 7 socket (SO_LINGER,
 *            SO_KEEPALIVE), man 7 signal (SIGPIPE)
 */
#include "common.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The stage's own options, for the lesson's experiments. */
struct settings {
    bool keepalive; /* -k given */
    unsigned long ka_idle, ka_intvl, ka_cnt;
    bool linger0; /* -L */
    bool nagle;   /* -N: leave Nagle's algorithm on */
};

static const struct stage_option own_options[] = {
    {'k', "IDL,INT,CNT",
     "TCP keepalive: probe after IDL s of silence, then every INT s; "
     "give up after CNT probes"},
    {'L', NULL,
     "close clients with SO_LINGER {on, 0}: RST instead of FIN, no "
     "TIME_WAIT (for the lesson)"},
    {'N', NULL,
     "keep Nagle's algorithm: do not set TCP_NODELAY on clients (F46)"},
    {0, NULL, NULL},
};

/* Reads -k's "IDL,INT,CNT", three whole numbers, into s; returns 0 or -1. */
static int parse_keepalive(const char *arg, struct settings *s)
{
    char text[64], *intvl, *cnt;

    if (strlen(arg) >= sizeof text)
        return -1;
    memcpy(text, arg, strlen(arg) + 1);
    intvl = strchr(text, ',');
    if (intvl == NULL)
        return -1;
    *intvl++ = '\0';
    cnt = strchr(intvl, ',');
    if (cnt == NULL)
        return -1;
    *cnt++ = '\0';
    /* Linux's own bounds: 32767 s for the times, 127 probes. */
    if (parse_number(text, 1, 32767, &s->ka_idle) == -1 ||
        parse_number(intvl, 1, 32767, &s->ka_intvl) == -1 ||
        parse_number(cnt, 1, 127, &s->ka_cnt) == -1)
        return -1;
    return 0;
}

static const char *set_option(char letter, const char *arg, void *ctx)
{
    struct settings *s = ctx;

    switch (letter) {
    case 'k':
        if (parse_keepalive(arg, s) == -1)
            return "three whole numbers IDL,INT,CNT: seconds (1 to "
                   "32767), seconds (1 to 32767), probes (1 to 127)";
        s->keepalive = true;
        break;
    case 'L':
        s->linger0 = true;
        break;
    case 'N':
        s->nagle = true;
        break;
    default: /* getopt hands on only own_options' letters: no test comes here */
        break;
    }
    return NULL;
}

/* Writes all len bytes of buf to fd, however many write() calls it takes:
 * a write on a socket may take only part of the data (a full send buffer, a
 * signal). Returns 0, or -1 with errno set. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n == -1) {
            if (errno == EINTR)
                continue; /* interrupted before writing anything: again */
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Echoes everything the client on fd sends until it ends its side of the
 * stream; returns the number of bytes echoed. An error on this connection
 * (ECONNRESET from a client that reset, EPIPE from one that vanished while
 * we wrote) is reported and ends only this client: *failed is set.
 */
static long long echo_client(int fd, const char *peer, bool *failed)
{
    char buf[16384];
    long long total = 0;

    *failed = false;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return total; /* end of stream: the client closed or shut down
                             its sending side, and all it sent is echoed */
        if (n == -1) {
            if (errno == EINTR)
                continue;
            warn_errno(errno, "read from %s on fd %d", peer, fd);
            *failed = true;
            return total;
        }
        /* Echo this piece in full before reading more: the client gets back
         * every byte, in order, even when write() takes a part at a time. */
        if (write_all(fd, buf, (size_t)n) == -1) {
            warn_errno(errno, "write to %s on fd %d", peer, fd);
            *failed = true;
            return total;
        }
        total += n;
    }
}

/* The keepalive knobs are not POSIX. The idle time before the first probe is
 * TCP_KEEPIDLE on Linux and FreeBSD; macOS spells it TCP_KEEPALIVE (and
 * shows all three knobs only with _DARWIN_C_SOURCE, which the build defines
 * there). */
#if defined(TCP_KEEPIDLE)
#define KEEPIDLE_OPT  TCP_KEEPIDLE
#define KEEPIDLE_NAME "TCP_KEEPIDLE"
#elif defined(TCP_KEEPALIVE)
#define KEEPIDLE_OPT  TCP_KEEPALIVE
#define KEEPIDLE_NAME "TCP_KEEPALIVE, this system's TCP_KEEPIDLE"
#endif

/* Says what keepalive will do on every client: with -k, each knob that this
 * system has and that is set, and the system-wide default for any it lacks. */
static void describe_keepalive(const struct settings *s)
{
    if (!s->keepalive) {
        narrate("keepalive off (-k turns it on): a client that vanishes "
                "without a word keeps this server in read() for ever");
        return;
    }
    narrate("keepalive on (-k): SO_KEEPALIVE on every client; when the "
            "kernel's probes go unanswered, read() fails with ETIMEDOUT");
#ifdef KEEPIDLE_OPT
    narrate("keepalive: the first probe after %lu s of silence (" KEEPIDLE_NAME
            ")",
            s->ka_idle);
#else
    narrate("keepalive: this system has neither TCP_KEEPIDLE nor "
            "TCP_KEEPALIVE: the system-wide idle time applies instead");
#endif
#ifdef TCP_KEEPINTVL
    narrate("keepalive: then a probe every %lu s (TCP_KEEPINTVL)", s->ka_intvl);
#else
    narrate("keepalive: this system has no TCP_KEEPINTVL: the system-wide "
            "interval applies instead");
#endif
#ifdef TCP_KEEPCNT
    narrate("keepalive: the kernel gives up after %lu unanswered probes "
            "(TCP_KEEPCNT)",
            s->ka_cnt);
#else
    narrate("keepalive: this system has no TCP_KEEPCNT: the system-wide "
            "probe count applies instead");
#endif
}

/* -k: turns on TCP keepalive for fd, with each of its knobs that the system
 * has. Returns 0 or -1. */
static int set_keepalive(int fd, const struct settings *s)
{
    int on = 1;

    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) == -1)
        return -1;
#ifdef KEEPIDLE_OPT
    {
        int idle = (int)s->ka_idle;
        if (setsockopt(fd, IPPROTO_TCP, KEEPIDLE_OPT, &idle, sizeof idle) == -1)
            return -1;
    }
#endif
#ifdef TCP_KEEPINTVL
    {
        int intvl = (int)s->ka_intvl;
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) ==
            -1)
            return -1;
    }
#endif
#ifdef TCP_KEEPCNT
    {
        int cnt = (int)s->ka_cnt;
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) == -1)
            return -1;
    }
#endif
    (void)s;
    return 0;
}

/* -L: makes the coming close() of fd a reset (F28). SO_LINGER {on, 0 s}:
 * close() throws away anything unsent and sends RST instead of FIN, so no
 * TIME_WAIT on either side. Rarely right: the peer sees ECONNRESET and may
 * lose what it was sent. A failure is reported; the close is then an
 * ordinary one. */
static void set_linger_zero(int fd)
{
    struct linger lg = {1, 0};

    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == -1)
        warn_errno(errno, "setsockopt SO_LINGER on fd %d", fd);
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

int main(int argc, char **argv)
{
    struct settings set = {false, 0, 0, 0, false, false};
    const struct stage_info info = {
        .name = "stage4_accept",
        .summary = "an iterative echo server: accept one client, echo it "
                   "until it leaves, then the next",
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
    ready_line("listening on", (struct sockaddr *)&addr, addrlen);
    if (set.nagle)
        narrate("-N: Nagle's algorithm stays on: a small echo may wait for "
                "the client's delayed ACK");
    else
        narrate("TCP_NODELAY on every client: an echo goes out at once, not "
                "held back by Nagle's algorithm (-N keeps it)");
    describe_keepalive(&set);
    if (set.linger0)
        narrate("-L: clients are closed with SO_LINGER {on, 0}: RST, no "
                "TIME_WAIT");
    port = addr_for_clients((struct sockaddr *)&addr, host, sizeof host);
    narrate("try: nc %s %u in two terminals: the first is echoed, the "
            "second waits in the queue until the first leaves",
            host, port);
    narrate("stop with Ctrl-C or: kill %ld", (long)getpid());

    /* The iterative server: one client at a time, start to end. */
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t peerlen = sizeof peer;
        char peertext[ADDR_TEXT_MAX];
        long long echoed;
        bool failed;
        int client;

        step("accept() takes the next connection off the queue (it sleeps "
             "while the queue is empty)");
        narrate("waiting in accept() for a client");
        /* peerlen is value-result: in, the room in peer; out, how much of it
         * the kernel filled with the client's address. */
        client = accept(fd, (struct sockaddr *)&peer, &peerlen);
        if (client == -1) {
            int err = errno;
            if (accept_error_is_transient(err)) {
                warn_errno(err, "accept (that connection only; going on)");
                continue;
            }
            if (accept_error_is_exhaustion(err)) {
                /* Out of descriptors or memory: the connection stays in the
                 * queue. Retrying at once would spin; wait a second. Stage 6
                 * shows a real cure. */
                struct timespec pause_for = {1, 0};
                warn_errno(err, "accept (retrying in a second)");
                /* (Only SIGINT and SIGTERM are caught here, and they end
                 * the process: no test sees nanosleep() fail.) */
                while (nanosleep(&pause_for, &pause_for) == -1 &&
                       errno == EINTR)
                    ;
                continue;
            }
            die("accept");
        }
        addr_format((struct sockaddr *)&peer, peerlen, peertext,
                    sizeof peertext);
        narrate("client %s connected on fd %d; every other client waits "
                "until it leaves",
                peertext, client);
        /* Nagle's algorithm holds back a small segment while an earlier one
         * is unacknowledged, and the client delays its ACK hoping to send
         * it along with data of its own: the second of two small echoes can
         * wait for that delayed ACK, tens of milliseconds each time (F46).
         * An echo server writes back what it read as soon as it has it, and
         * has nothing to add, so it turns Nagle off. A failure costs only
         * speed: the client is served all the same. */
        if (!set.nagle &&
            setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == -1)
            warn_errno(errno, "TCP_NODELAY on fd %d (going on without)",
                       client);
        /* Urgent data (send() with MSG_OOB) is one byte marked inside the
         * stream; unless SO_OOBINLINE is set, the kernel takes it out of
         * the stream and read() never sees it: the echo would silently
         * lose it. RFC 6093 asks applications that may receive it to keep
         * it in line (F45). */
        if (setsockopt(client, SOL_SOCKET, SO_OOBINLINE, &on, sizeof on) == -1)
            warn_errno(errno, "SO_OOBINLINE on fd %d (going on without)",
                       client);
        /* A client that vanishes without a word (power cut, cable pulled)
         * sends neither FIN nor RST: without keepalive the read() below
         * would wait for it for ever, and every other client with it. */
        if (set.keepalive && set_keepalive(client, &set) == -1)
            warn_errno(errno, "keepalive on fd %d (going on without)", client);

        echoed = echo_client(client, peertext, &failed);

        if (set.linger0)
            set_linger_zero(client);
        if (close(client) == -1)
            warn_errno(errno, "close fd %d", client);
        narrate("client %s on fd %d %s: %lld bytes echoed", peertext, client,
                failed ? "ended by an error" : "left", echoed);
    }
}
