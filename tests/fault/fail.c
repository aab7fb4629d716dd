/*
 * fail.c - a preload library (build/tools/libfail.so) that makes one system
 * call fail, so the tests can reach the error paths no real setup provokes:
 *
 *   LD_PRELOAD=build/tools/libfail.so FAIL_CALL=listen bin/stage3_listen
 *
 * The call named by FAIL_CALL (socket, setsockopt, getsockopt, getsockname,
 * getpeername, listen, sigaction or close) returns -1 with errno EIO; every
 * other call, and every call when FAIL_CALL is unset, goes to the C library.
 * Linux and glibc (RTLD_NEXT, and glibc's declarations of the socket calls
 * are GNU C): built with -std=gnu11, a test tool never linked into a stage.
 */
/* NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
#define _GNU_SOURCE /* for RTLD_NEXT */
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* True when FAIL_CALL names this call: it fails with EIO. */
static int failing(const char *call)
{
    const char *want = getenv("FAIL_CALL");

    if (want == NULL || strcmp(want, call) != 0)
        return 0;
    errno = EIO;
    return 1;
}

/* The C library's own function called NAME; POSIX's way of turning dlsym's
 * void * into a function pointer is to copy the pointer's bytes. */
static void *next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

int socket(int domain, int type, int protocol)
{
    int (*real)(int, int, int);

    if (failing("socket"))
        return -1;
    *(void **)&real = next("socket");
    return real(domain, type, protocol);
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    int (*real)(int, int, int, const void *, socklen_t);

    if (failing("setsockopt"))
        return -1;
    *(void **)&real = next("setsockopt");
    return real(fd, level, name, val, len);
}

int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    int (*real)(int, int, int, void *, socklen_t *);

    if (failing("getsockopt"))
        return -1;
    *(void **)&real = next("getsockopt");
    return real(fd, level, name, val, len);
}

int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    int (*real)(int, struct sockaddr *, socklen_t *);

    if (failing("getsockname"))
        return -1;
    *(void **)&real = next("getsockname");
    return real(fd, addr, len);
}

int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    int (*real)(int, struct sockaddr *, socklen_t *);

    if (failing("getpeername"))
        return -1;
    *(void **)&real = next("getpeername");
    return real(fd, addr, len);
}

/* NOLINTNEXTLINE(readability-inconsistent-declaration-parameter-name) */
int listen(int fd, int backlog)
{
    int (*real)(int, int);

    if (failing("listen"))
        return -1;
    *(void **)&real = next("listen");
    return real(fd, backlog);
}

/* NOLINTNEXTLINE(readability-inconsistent-declaration-parameter-name) */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    int (*real)(int, const struct sigaction *, struct sigaction *);

    if (failing("sigaction"))
        return -1;
    *(void **)&real = next("sigaction");
    return real(sig, act, old);
}

int close(int fd)
{
    int (*real)(int);

    if (failing("close"))
        return -1;
    *(void **)&real = next("close");
    return real(fd);
}
