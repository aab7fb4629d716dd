/*
 * window.c - a preload library (build/tools/libwindow.so) that holds open,
 * once, the moment between an event loop's last look at the world and its
 * wait, so that a test can make a signal land exactly there:
 *
 *   WINDOW_GATE=/tmp/gate LD_PRELOAD=build/tools/libwindow.so bin/stage6_poll
 *
 * Why. A loop that learns of a signal from a flag the handler sets, and
 * looks at the flag before it waits, loses a signal that comes after the
 * look and before the wait: the wait sleeps on, maybe for ever (F41). The
 * window is a few instructions wide, so a test that merely sends signals
 * would almost never hit it. The self-pipe closes it: the handler writes a
 * byte that the wait itself watches, so the wait returns at once whenever
 * the signal came.
 *
 * What this library does. In the loop's wait (poll() on more than one
 * descriptor, select() or epoll_wait(): the stages' own poll() of stdout
 * alone is left untouched), when the file WINDOW_GATE names exists, it
 * renames it to the same name with ".open" added (the test waits for that
 * name), then sleeps up to 10 s before making the real call: the program is
 * then past its last look and not yet in its wait. A signal ends the sleep
 * (nanosleep() fails with EINTR once the handler has run), and the real call
 * follows at once, as it would have without the window. The rename makes
 * the window open once per gate.
 *
 * WINDOW_PROGRAM=NAME, when set, limits it to the program whose name (the
 * last part of its argv[0]) is NAME: every other process that inherits the
 * preload (the shell of a wrapper script) runs untouched.
 *
 * Linux and glibc (RTLD_NEXT, program_invocation_short_name and epoll are
 * GNU C or Linux's): built with -std=gnu11, a test tool never linked into a
 * stage.
 */
/* NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
#define _GNU_SOURCE /* for RTLD_NEXT and program_invocation_short_name */
#include <dlfcn.h>
#include <errno.h> /* program_invocation_short_name */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>

/* False in a process that WINDOW_PROGRAM leaves out. */
static bool active;

__attribute__((constructor)) static void choose(void)
{
    const char *only = getenv("WINDOW_PROGRAM");

    /* glibc sets program_invocation_short_name from argv[0]. */
    active = only == NULL || strcmp(only, program_invocation_short_name) == 0;
}

/* Opens the window if the gate is there: renames it, then sleeps until a
 * signal comes or 10 s pass. errno is kept as the caller left it. */
static void hold_window(void)
{
    const char *gate = getenv("WINDOW_GATE");
    char open_name[4096];
    struct timespec rest = {10, 0};
    int saved = errno;

    if (!active || gate == NULL)
        return;
    if (snprintf(open_name, sizeof open_name, "%s.open", gate) >=
        (int)sizeof open_name)
        return;
    if (rename(gate, open_name) == 0)
        (void)nanosleep(&rest, NULL);
    errno = saved;
}

/* The stand-ins; their parameters are named for this file, not with glibc's
 * reserved names (__fds), hence the NOLINTs. */
/* NOLINTNEXTLINE(readability-inconsistent-declaration-parameter-name) */
int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    int (*real)(struct pollfd *, nfds_t, int);

    *(void **)&real = dlsym(RTLD_NEXT, "poll");
    if (n > 1)
        hold_window();
    return real(fds, n, timeout);
}

/* NOLINTNEXTLINE(readability-inconsistent-declaration-parameter-name) */
int select(int n, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    int (*real)(int, fd_set *, fd_set *, fd_set *, struct timeval *);

    *(void **)&real = dlsym(RTLD_NEXT, "select");
    hold_window();
    return real(n, rd, wr, ex, tv);
}

/* NOLINTNEXTLINE(readability-inconsistent-declaration-parameter-name) */
int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout)
{
    int (*real)(int, struct epoll_event *, int, int);

    *(void **)&real = dlsym(RTLD_NEXT, "epoll_wait");
    hold_window();
    return real(epfd, events, max, timeout);
}
