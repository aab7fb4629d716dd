/*
 * stage6_epoll - lesson 6, the road on (F40): the same server on epoll.
 *
 * poll() and select() hand the kernel the whole watch list on every call,
 * and the kernel walks all of it: a round costs time in proportion to the
 * descriptors watched, even when one of ten thousand is ready. epoll (Linux;
 * kqueue is the BSDs' and macOS's equivalent) keeps the watch list in the
 * kernel instead. epoll_create1() makes an instance; epoll_ctl() adds a
 * descriptor with the events it waits for (EPOLL_CTL_ADD), changes them
 * (EPOLL_CTL_MOD) or removes it; epoll_wait() sleeps until some are ready
 * and returns only those, each with the pointer given at EPOLL_CTL_ADD. The
 * work per wakeup is proportional to what is ready, not to what is watched.
 * Here the watch list changes only when a client's wishes change: a client
 * that is read and echoed in one round costs no epoll_ctl() at all.
 *
 * Level-triggered (the default), like poll(): a descriptor that is still
 * ready is reported again at the next wait, so the body's per-round budgets
 * (reads per client, accepts per round) lose nothing.
 *
 * Run it:    bin/stage6_epoll (Linux only: built where <sys/epoll.h> is)
 * Watch it:  `strace -e trace=epoll_wait,epoll_pwait,epoll_ctl -p PID`:
 *            epoll_ctl only when a client arrives or its wishes change.
 *            `ls -l /proc/PID/fd`: fd 7 is anon_inode:[eventpoll];
 *            `cat /proc/PID/fdinfo/7`: one line per watched descriptor.
 *            `make bench`: its cost per round trip stays flat as idle
 *            clients are added; poll()'s grows.
 * Read:      man 7 epoll, man 2 epoll_ctl, man 2 epoll_wait
 */
#include "server.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

/* At most this many ready descriptors are taken per epoll_wait(); more wait
 * for the next round (level-triggered: nothing is lost). */
#define EVENTS_PER_WAIT 256

static int epfd = -1;
/* What data.ptr points at for the two descriptors that are not clients. */
static char wake_tag, listener_tag;
/* Whether the listener is watched now (it rests when out of descriptors). */
static bool listener_on;

/* Asks the kernel to watch fd for events, with ptr handed back by the
 * waits; add: a new descriptor, else a change. Returns 0 or -1. */
static int control(int fd, unsigned events, void *ptr, bool add)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};

    return epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

void unwatch(struct server *srv, struct client *c)
{
    /* Nothing to do: closing the descriptor takes it out of the epoll
     * instance (no other descriptor refers to the same socket). */
    (void)srv;
    (void)c;
}

int watch(struct server *srv, struct client *c)
{
    unsigned events = (c->wishes & WANT_READ ? EPOLLIN : 0U) |
                      (c->wishes & WANT_WRITE ? EPOLLOUT : 0U);

    (void)srv;
    if (c->wishes == c->watched)
        return 0; /* it only moved to another slot: epoll does not care */
    if (control(c->fd, events, c, c->watched == 0) == -1) {
        warn_errno(errno, "epoll_ctl for %s on fd %d", c->peer, c->fd);
        return -1;
    }
    c->watched = c->wishes;
    return 0;
}

/* What epoll's events mean for serve(): as poll()'s revents, a hang-up or
 * an error counting as readable and writable, so that read() and write()
 * say which. */
static int readiness(unsigned events)
{
    bool gone = (events & (EPOLLHUP | EPOLLERR)) != 0;

    return ((events & EPOLLIN) || gone ? CAN_READ : 0) |
           ((events & EPOLLOUT) || gone ? CAN_WRITE : 0) | (gone ? HUNG_UP : 0);
}

int main(int argc, char **argv)
{
    static const struct program prog = {
        .name = "stage6_epoll",
        .api = "epoll_wait()",
        .extra_fds = 1,
    };
    struct epoll_event events[EVENTS_PER_WAIT];
    struct server srv;
    int sig = 0;

    server_start(&srv, &prog, argc, argv);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd == -1)
        die("epoll_create1");
    if (control(srv.wake, EPOLLIN, &wake_tag, true) == -1 ||
        control(srv.listener, EPOLLIN, &listener_tag, true) == -1)
        die("epoll_ctl EPOLL_CTL_ADD");
    listener_on = true;
    narrate("epoll instance on fd %d: the watch list lives in the kernel",
            epfd);
    server_ready(&srv, &prog);

    /* The event loop: sleep in epoll_wait(), serve what is ready, close the
     * finished after the scan, accept the newcomers, and again. */
    while (sig == 0) {
        long long now = now_ms();
        bool queued = false;
        int ready;

        /* The listener rests while out of descriptors: no events asked. */
        if (accepting(&srv, now) != listener_on) {
            listener_on = !listener_on;
            if (control(srv.listener, listener_on ? EPOLLIN : 0, &listener_tag,
                        false) == -1)
                die("epoll_ctl EPOLL_CTL_MOD on the listener");
        }
        ready = epoll_wait(epfd, events, EVENTS_PER_WAIT,
                           timeout_ms(prepare_wait(&srv, now), now));
        if (ready == -1) { /* EINTR: a signal's byte is in the self-pipe */
            wait_failed("epoll_wait");
            continue;
        }
        now = now_ms();
        /* Only what is ready: no pass over the clients at all. */
        for (int i = 0; i < ready; i++) {
            void *ptr = events[i].data.ptr;
            if (ptr == &wake_tag)
                sig = take_signal(srv.wake);
            else if (ptr == &listener_tag)
                queued = true;
            else
                serve(&srv, ptr, readiness(events[i].events), now);
        }
        expire_idle(&srv, now);
        close_finished(&srv);
        if (queued && sig == 0)
            accept_all(&srv, now);
    }
    server_stop(&srv, sig);
    if (close(epfd) == -1)
        warn_errno(errno, "close the epoll fd %d", epfd);
    return 0;
}
