/*
 * bsdpoll.c - a preload library (build/tools/libbsdpoll.so) that makes
 * poll() report a half-closed TCP connection the way macOS does, so that a
 * test on Linux meets what a server meets there:
 *
 *   LD_PRELOAD=build/tools/libbsdpoll.so bin/stage6_poll
 *
 * What differs. When the peer has shut down its sending side (its FIN has
 * arrived and ours has not been sent: the socket is in CLOSE_WAIT), Linux's
 * poll() reports POLLIN (end of stream is there to read) and, while the send
 * buffer has room, POLLOUT; POLLHUP comes only once both directions are shut.
 * macOS builds poll() on kqueue (xnu, bsd/kern/sys_generic.c: poll_nocancel
 * and poll_callback). A pollfd that asks for input (POLLIN, POLLRDNORM,
 * POLLPRI, POLLRDBAND or POLLHUP) gets an EVFILT_READ filter, which on a
 * socket that can receive no more fires at once with EV_EOF
 * (bsd/kern/uipc_socket.c: filt_soread_common, SS_CANTRCVMORE);
 * poll_callback turns EV_EOF into POLLHUP, and a POLLHUP keeps POLLOUT out of
 * revents even when the send buffer has room (the read filter is registered
 * first, so its event is collected first). A pollfd that asks only for
 * POLLOUT gets only EVFILT_WRITE, whose EV_EOF means our own side is shut
 * (SS_CANTSENDMORE, filt_sowrite_common): it sees what Linux reports.
 *
 * What this library does, in every poll() call: for each pollfd that asks
 * for input on a TCP socket in CLOSE_WAIT (TCP_INFO's tcpi_state), revents
 * gets POLLHUP and loses POLLOUT, POLLWRNORM and POLLWRBAND. Such a pollfd is
 * ready at once, so when one is there before the call, the real poll() is
 * called with timeout 0: the caller is not put to sleep, as macOS would not.
 * Only CLOSE_WAIT: the other states where the two systems differ follow the
 * program's own shutdown(), which the stages never call.
 *
 * Not every BSD does this. FreeBSD's poll() is not on kqueue: sopoll_generic
 * (sys/kern/uipc_socket.c) adds POLLHUP only when both directions are shut,
 * as Linux does. OpenBSD's poll() is on kqueue, but its filt_soread sets the
 * hang-up for poll() only once the socket is disconnected. All of this rests
 * on reading those sources (recent versions), not on a run on macOS or a BSD.
 *
 * glibc's poll() is the poll symbol on every architecture (on arm64 it makes
 * the ppoll system call itself, not through ppoll()), so standing in for
 * poll() is enough for a program that calls poll(), as the stages do (`nm -D
 * PROGRAM | grep poll`); a program that calls ppoll() is not covered.
 *
 * BSDPOLL_PROGRAM=NAME, when set, limits the stand-in to the program whose
 * name (the last part of its argv[0]) is NAME; every other process that
 * inherits the preload (the shell of a wrapper script) polls untouched.
 *
 * Linux and glibc (RTLD_NEXT, program_invocation_short_name and TCP_INFO are
 * GNU C): built with -std=gnu11, a test tool never linked into a stage.
 */
/* NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
#define _GNU_SOURCE /* for RTLD_NEXT and program_invocation_short_name */
#include <dlfcn.h>
#include <errno.h> /* program_invocation_short_name */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The events for which macOS registers its read filter. */
#define INPUT_EVENTS (POLLIN | POLLRDNORM | POLLPRI | POLLRDBAND | POLLHUP)
/* What a POLLHUP keeps out of revents on macOS. */
#define OUTPUT_EVENTS (POLLOUT | POLLWRNORM | POLLWRBAND)

/* False in a process that BSDPOLL_PROGRAM leaves out: it polls untouched. */
static bool active;

__attribute__((constructor)) static void choose(void)
{
    const char *only = getenv("BSDPOLL_PROGRAM");

    /* glibc sets program_invocation_short_name from argv[0]. */
    active = only == NULL || strcmp(only, program_invocation_short_name) == 0;
}

/* True when p asks for input on a TCP socket whose peer has half-closed:
 * the case where macOS reports POLLHUP and Linux does not. Any other
 * descriptor (not a socket, not TCP, closed) fails TCP_INFO: false. */
static bool half_closed(const struct pollfd *p)
{
    struct tcp_info info;
    socklen_t len = sizeof info;

    if (p->fd < 0 || (p->events & INPUT_EVENTS) == 0)
        return false;
    if (getsockopt(p->fd, IPPROTO_TCP, TCP_INFO, &info, &len) == -1)
        return false;
    return info.tcpi_state == TCP_CLOSE_WAIT;
}

/* The stand-in; its parameters are named for this file, not with glibc's
 * reserved names (__fds), hence the NOLINT. */
/* NOLINTNEXTLINE(readability-inconsistent-declaration-parameter-name) */
int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    int (*real)(struct pollfd *, nfds_t, int);
    int ready;

    *(void **)&real = dlsym(RTLD_NEXT, "poll");
    if (!active)
        return real(fds, n, timeout);
    for (nfds_t i = 0; i < n && timeout != 0; i++)
        if (half_closed(&fds[i]))
            timeout = 0;
    ready = real(fds, n, timeout);
    if (ready == -1)
        return -1;
    /* The peer's FIN may also have come while the real poll() slept. */
    ready = 0;
    for (nfds_t i = 0; i < n; i++) {
        if (half_closed(&fds[i]))
            fds[i].revents =
                (short)((fds[i].revents & ~OUTPUT_EVENTS) | POLLHUP);
        if (fds[i].revents != 0)
            ready++;
    }
    return ready;
}
