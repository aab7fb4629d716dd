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
 *
 * Run it:    bin/stage4_accept
 * Watch it:  `nc 127.0.0.1 6969` in two terminals: the first is echoed, the
 *            second waits (its words are queued in the kernel) until the
 *            first leaves. `ss -tn 'sport = :6969'` shows both connections
 *            established; `ls -l /proc/PID/fd` shows only one descriptor per
 *            client being served. `strace -e trace=network,read,write` shows
 *            the server asleep in accept() or read().
 * Read:      man 2 accept, man 2 read, man 2 write, man 7 tcp,
 *            man 7 socket (SO_LINGER, SO_KEEPALIVE), man 7 signal (SIGPIPE)
 */
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
    const struct stage_info info = {
        .name = "stage4_accept",
        .summary = "an iterative echo server: accept one client, echo it "
                   "until it leaves, then the next",
        .standard = OPT_ADDR | OPT_PORT | OPT_BACKLOG | OPT_QUIET | OPT_STEP |
                    OPT_NOREUSE,
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
        narrate("SO_REUSEADDR not set (-R): bind() fails with EADDRINUSE "
                "while this port has TIME_WAIT connections");
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

        echoed = echo_client(client, peertext, &failed);

        if (close(client) == -1)
            warn_errno(errno, "close fd %d", client);
        narrate("client %s on fd %d %s: %lld bytes echoed", peertext, client,
                failed ? "ended by an error" : "left", echoed);
    }
}
