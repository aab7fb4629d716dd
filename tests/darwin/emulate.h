/*
 * emulate.h - Darwin's feature-test rules, emulated on Linux, so that a
 * build here fails where a build on macOS would (tests/build.bats). Given
 * to the compiler with -include, with -U__linux__ (no Linux-only branch)
 * and UNAME_S=Darwin (the flags common/flags.mk chooses on macOS).
 *
 * It includes the system headers the programs use, then takes away what
 * Darwin's versions of them do not give a program compiled with
 * _POSIX_C_SOURCE, unless _DARWIN_C_SOURCE is defined too, and what Darwin
 * does not have at all. A name taken away is poisoned: any later use is an
 * error that names it. The lists rest on reading Apple's headers (xnu,
 * bsd/netinet/in.h and bsd/netinet/tcp.h: the blocks guarded by
 * "!defined(_POSIX_C_SOURCE) || defined(_DARWIN_C_SOURCE)"), not on a run
 * on macOS; only names a socket program is likely to meet are listed.
 */
#ifndef DARWIN_EMULATE_H
#define DARWIN_EMULATE_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef _DARWIN_C_SOURCE
/* netinet/in.h: beyond POSIX's INADDR_ANY and INADDR_BROADCAST. */
#undef INADDR_LOOPBACK
#undef INADDR_NONE
#undef IN_LOOPBACKNET
#undef IPPORT_RESERVED
#undef IPPROTO_MAX
#pragma GCC poison INADDR_LOOPBACK INADDR_NONE IN_LOOPBACKNET
#pragma GCC poison IPPORT_RESERVED IPPROTO_MAX
/* netinet/tcp.h: everything but TCP_NODELAY. */
#undef TCP_MAXSEG
#undef TCP_KEEPINTVL
#undef TCP_KEEPCNT
#pragma GCC poison TCP_MAXSEG TCP_KEEPINTVL TCP_KEEPCNT TCP_KEEPALIVE
#else
/* Darwin's spelling of the idle time before keepalive probes. */
#define TCP_KEEPALIVE 0x10
#endif

/* Not on Darwin at all (Linux's): the code must test for them. */
#undef TCP_KEEPIDLE
#undef TCP_INFO
#undef POLLRDHUP
#undef MSG_NOSIGNAL
#undef SOCK_NONBLOCK
#undef SOCK_CLOEXEC
#pragma GCC poison POLLRDHUP MSG_NOSIGNAL SOCK_NONBLOCK SOCK_CLOEXEC
#pragma GCC poison accept4 epoll_create1 epoll_wait epoll_ctl

#endif
