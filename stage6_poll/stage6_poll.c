/*
 * stage6_poll - lesson 6: poll() waits for many descriptors at once.
 *
 * What this stage adds to stage 5: the loop sleeps. It hands poll() one
 * struct pollfd per descriptor, saying what it waits for (POLLIN: bytes to
 * read, or on the listener a connection to accept; POLLOUT: room to write),
 * and the kernel puts the process to sleep until one of them is ready or the
 * nearest deadline passes. poll() writes what happened into each entry's
 * revents and returns how many entries have some; the loop serves exactly
 * those, and stops looking once it has found them all. The watch list is
 * kept from round to round: poll() reads events and writes only revents.
 *
 * This file is the loop and what is its readiness API's own; the rest of
 * the server is the body, server.c (read server.h next): the clients and
 * their output buffers, echo with backpressure and half-close, accept with
 * the reserve descriptor, the idle timeout, the self-pipe for signals.
 * stage6_poll.c, stage6_select.c and stage6_epoll.c share it, and differ
 * only in how they wait: `diff -u stage6_poll.c stage6_select.c`.
 *
 * Run it:    bin/stage6_poll
 * Watch it:  `nc 127.0.0.1 6969` in several terminals: all echoed at once.
 *            `top -p PID`: 0% CPU while idle (stage 5 burned 100%).
 *            `strace -e trace=poll,ppoll,accept,accept4,read,write -p PID`:
 *            one poll() that sleeps, then exactly the calls it said would
 *            not block (on arm64, glibc's poll() is the ppoll system call).
 *            `ls -l /proc/PID/fd`: the listener 3, the self-pipe 4 and 5,
 *            the reserve /dev/null 6, clients from 7 (as the narration says).
 * Read:      man 2 poll, man 2 pipe, man 7 signal-safety, man 7 tcp
 */
#include "server.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

/* pfds[0] is the self-pipe, pfds[1] the listener, pfds[2 + i] the client in
 * slot i; an entry changes only when its client's wishes change. */
static struct pollfd *pfds;

/* The events that say what c wants, in poll()'s words. */
static short events_for(int wishes)
{
    return (short)((wishes & WANT_READ ? POLLIN : 0) |
                   (wishes & WANT_WRITE ? POLLOUT : 0));
}

int watch(struct server *srv, struct client *c)
{
    (void)srv;
    pfds[2 + c->slot] =
        (struct pollfd){.fd = c->fd, .events = events_for(c->wishes)};
    c->watched = c->wishes;
    return 0;
}

void unwatch(struct server *srv, struct client *c)
{
    /* Nothing to do: the last client moves into c's slot (watch() is told),
     * and the list handed to poll() is one shorter. */
    (void)srv;
    (void)c;
}

/* What poll()'s revents mean for serve(). POLLHUP and POLLERR count as
 * readable and writable: read() and write() then say what is left, end of
 * stream, or the error. POLLNVAL (not an open descriptor) ends the client. */
static int readiness(short revents)
{
    int ready = 0;

    if (revents & (POLLIN | POLLHUP | POLLERR))
        ready |= CAN_READ;
    if (revents & (POLLOUT | POLLHUP | POLLERR))
        ready |= CAN_WRITE;
    if (revents & (POLLHUP | POLLERR | POLLNVAL))
        ready |= HUNG_UP;
    return ready;
}

int main(int argc, char **argv)
{
    static const struct program prog = {
        .name = "stage6_poll",
        .api = "poll()",
    };
    struct server srv;
    int sig;

    server_start(&srv, &prog, argc, argv);
    pfds = calloc(srv.max + 2, sizeof *pfds);
    if (pfds == NULL)
        die("calloc for %zu clients", srv.max);
    pfds[0] = (struct pollfd){.fd = srv.wake, .events = POLLIN};
    pfds[1] = (struct pollfd){.fd = srv.listener, .events = POLLIN};
    server_ready(&srv, &prog);

    /* The event loop: sleep in poll(), serve what is ready, close the
     * finished after the scan, accept the newcomers, and again. */
    for (;;) {
        long long now = now_ms();
        size_t watched = srv.count; /* clients[0..watched) are in pfds */
        int ready;

        /* A negative fd is one poll() skips: the listener while it rests. */
        pfds[1].fd = accepting(&srv, now) ? srv.listener : -1;
        ready = poll(pfds, (nfds_t)(2 + watched),
                     timeout_ms(prepare_wait(&srv, now), now));
        if (ready == -1) { /* EINTR: a signal's byte is in the self-pipe */
            wait_failed("poll");
            continue;
        }
        now = now_ms();
        if (pfds[0].revents != 0 && (sig = take_signal(srv.wake)) != 0)
            break;
        ready -= (pfds[0].revents != 0) + (pfds[1].revents != 0);
        /* One pass at most, and it ends at the last ready entry. */
        for (size_t i = 0; ready > 0 && i < watched; i++) {
            if (pfds[2 + i].revents == 0)
                continue;
            ready--;
            serve(&srv, srv.clients[i], readiness(pfds[2 + i].revents), now);
        }
        expire_idle(&srv, now);
        close_finished(&srv);
        if (pfds[1].revents != 0)
            accept_all(&srv, now);
    }
    server_stop(&srv, sig);
    free(pfds);
    return 0;
}
