/*
 * stage6_select - lesson 6, the older way: the same server on select().
 *
 * select() takes three bit sets (fd_set: read, write, exceptional) and the
 * highest descriptor plus one, and overwrites the sets with its answer: the
 * loop keeps its own and hands select() copies. An fd_set is a fixed array
 * of FD_SETSIZE bits (1024 on Linux): FD_SET on a descriptor at or above it
 * writes past the end of the set, corrupting memory silently, so a client
 * that gets one is closed at once, saying why. poll() has no such limit;
 * both cost time in proportion to the descriptors watched (epoll: F40).
 *
 * This file is the loop and what is its readiness API's own; the rest of
 * the server is the body, server.c (read server.h next): the clients and
 * their output buffers, echo with backpressure and half-close, accept with
 * the reserve descriptor, the idle timeout, the self-pipe for signals.
 * stage6_poll.c, stage6_select.c and stage6_epoll.c share it, and differ
 * only in how they wait: `diff -u stage6_poll.c stage6_select.c`.
 *
 * Run it:    bin/stage6_select
 * Watch it:  `strace -e trace=select,pselect6 -p PID`: the sets, every
 *            round. With 1,100 clients (build/tools/load -c 1100 -w
 *            127.0.0.1 6969 echo), the one on fd 1024 is refused, by name.
 * Read:      man 2 select, man 2 select_tut (its BUGS), man 2 poll
 */
#include "server.h"

#include <errno.h>
#include <sys/select.h>
#include <sys/time.h>

/* What the loop watches, kept between rounds: select() gets copies. */
static fd_set reading, writing;
/* The highest descriptor in either set (select() wants it plus one). */
static int maxfd = -1;

/* Puts fd in set, or takes it out, and keeps maxfd the highest descriptor
 * in either set. Only descriptors below FD_SETSIZE come here. */
static void mark(int fd, fd_set *set, bool on)
{
    if (on)
        FD_SET(fd, set);
    else
        FD_CLR(fd, set);
    if (on && fd > maxfd)
        maxfd = fd;
    while (maxfd >= 0 && !FD_ISSET(maxfd, &reading) &&
           !FD_ISSET(maxfd, &writing))
        maxfd--;
}

int watch(struct server *srv, struct client *c)
{
    /* The rule of select(): never FD_SET a descriptor at or above
     * FD_SETSIZE (the set has no bit for it). */
    if (c->fd >= FD_SETSIZE) {
        narrate("client %s refused: it got fd %d, and select() cannot "
                "watch a descriptor at or above FD_SETSIZE (%d); closing "
                "it at once (poll() has no such limit)",
                c->peer, c->fd, FD_SETSIZE);
        return -1;
    }
    (void)srv;
    mark(c->fd, &reading, c->wishes & WANT_READ);
    mark(c->fd, &writing, c->wishes & WANT_WRITE);
    c->watched = c->wishes;
    return 0;
}

void unwatch(struct server *srv, struct client *c)
{
    (void)srv;
    mark(c->fd, &reading, false);
    mark(c->fd, &writing, false);
}

/* What select()'s sets say of fd, for serve(). select() has no POLLHUP: a
 * socket at end of stream or with an error is simply readable (and
 * writable), and read() or write() then says which. */
static int readiness(int fd, const fd_set *rd, const fd_set *wr)
{
    return (FD_ISSET(fd, rd) ? CAN_READ : 0) |
           (FD_ISSET(fd, wr) ? CAN_WRITE : 0);
}

int main(int argc, char **argv)
{
    static const struct program prog = {
        .name = "stage6_select",
        .api = "select()",
        .fd_ceiling = FD_SETSIZE,
    };
    struct server srv;
    int sig;

    server_start(&srv, &prog, argc, argv);
    FD_ZERO(&reading);
    FD_ZERO(&writing);
    mark(srv.wake, &reading, true);
    mark(srv.listener, &reading, true);
    server_ready(&srv, &prog);

    /* The event loop: sleep in select(), serve what is ready, close the
     * finished after the scan, accept the newcomers, and again. */
    for (;;) {
        long long now = now_ms();
        size_t watched = srv.count; /* clients[0..watched) are in the sets */
        fd_set rd = reading, wr = writing;
        int ready, ms;
        struct timeval tv;

        /* The listener is left out of the copy while it rests. */
        if (!accepting(&srv, now))
            FD_CLR(srv.listener, &rd);
        ms = timeout_ms(prepare_wait(&srv, now), now);
        tv = (struct timeval){ms / 1000, (suseconds_t)(ms % 1000) * 1000};
        ready = select(maxfd + 1, &rd, &wr, NULL, ms < 0 ? NULL : &tv);
        if (ready == -1) { /* EINTR: a signal's byte is in the self-pipe */
            wait_failed("select");
            continue;
        }
        now = now_ms();
        if (FD_ISSET(srv.wake, &rd) && (sig = take_signal(srv.wake)) != 0)
            break;
        ready -=
            (FD_ISSET(srv.wake, &rd) != 0) + (FD_ISSET(srv.listener, &rd) != 0);
        /* One pass at most: select() counts a descriptor once per set. */
        for (size_t i = 0; ready > 0 && i < watched; i++) {
            int r = readiness(srv.clients[i]->fd, &rd, &wr);
            if (r == 0)
                continue;
            ready -= (r & CAN_READ ? 1 : 0) + (r & CAN_WRITE ? 1 : 0);
            serve(&srv, srv.clients[i], r, now);
        }
        expire_idle(&srv, now);
        close_finished(&srv);
        if (FD_ISSET(srv.listener, &rd))
            accept_all(&srv, now);
    }
    server_stop(&srv, sig);
    return 0;
}
