/*
 * stage2_bind - lesson 2: bind() gives the socket an address.
 *
 * What this stage adds to stage 1: the address, built by hand in a
 * sockaddr_in (or sockaddr_in6), setsockopt(SO_REUSEADDR) and bind(). The
 * socket gets a local address and port, and the kernel records in its table
 * of ports that this socket owns them. It is still not listening: a client
 * that connects now is refused. The program waits until SIGINT or SIGTERM.
 *
 * Run it:    bin/stage2_bind                 (127.0.0.1:6969)
 *            bin/stage2_bind -p 0            (the kernel picks a free port)
 *            bin/stage2_bind -a ::1 -p 0     (IPv6 loopback)
 * Watch it:  run a second copy with -R on the same port: EADDRINUSE. (On
 *            Linux two copies that both set SO_REUSEADDR both bind, as long
 *            as neither listens; stage 3, which listens, refuses the second.)
 *            `nc -vz 127.0.0.1 PORT` while it runs: Connection refused.
 *            `ls -l /proc/PID/fd`, and -s to pause before each call.
 * Read:      man 2 bind, man 7 ip (SO_REUSEADDR, ip_local_port_range),
 *            man 7 socket, man 3 inet_pton, man 3 getaddrinfo
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const struct stage_info info = {
        .name = "stage2_bind",
        .summary = "create a TCP socket, bind it to an address, and wait",
        .standard = OPT_ADDR | OPT_PORT | OPT_QUIET | OPT_STEP | OPT_NOREUSE,
    };
    struct options opt;
    struct sockaddr_in sin;        /* an IPv4 address and port */
    struct sockaddr_in6 sin6;      /* an IPv6 address and port */
    struct sockaddr_storage bound; /* room for either: getsockname() fills it */
    const struct sockaddr *addr;
    socklen_t addrlen;
    char text[ADDR_TEXT_MAX], host[ADDR_TEXT_MAX];
    unsigned port;
    int fd, on = 1;

    options_parse(&opt, &info, argc, argv);
    exit_on_signals();

    /* The address bind() takes, built by hand: zero the structure, turn the
     * text into the address's 4 or 16 bytes (inet_pton: 1 when the text is
     * of that family), name the family, and put the port in network byte
     * order (htons). A program that starts from a host name asks
     * getaddrinfo() instead, which fills these same structures, one for each
     * address the name has. From stage 3 on, addr_parse() in common.c does
     * what these lines do. */
    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (inet_pton(AF_INET, opt.addr, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)opt.port);
        addr = (const struct sockaddr *)&sin;
        addrlen = sizeof sin;
    } else if (inet_pton(AF_INET6, opt.addr, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)opt.port);
        addr = (const struct sockaddr *)&sin6;
        addrlen = sizeof sin6;
    } else {
        /* options_parse has checked the literal already: no run gets here. */
        usage_error("-a %s: not an address literal", opt.addr);
    }
    addr_format(addr, addrlen, text, sizeof text);

    step("socket() creates the endpoint (stage 1)");
    fd = socket(addr->sa_family, SOCK_STREAM, 0);
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
    if (bind(fd, addr, addrlen) == -1) {
        int err = errno;
        warn_errno(err, "bind %s", text);
        bind_hint(err, opt.addr, opt.port);
        exit(1);
    }

    /* Ask the kernel what it actually gave us: with port 0 it chose one. */
    addrlen = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &addrlen) == -1)
        die("getsockname");
    ready_line("bound to", (struct sockaddr *)&bound, addrlen);
    addr_format((struct sockaddr *)&bound, addrlen, text, sizeof text);
    if (opt.port == 0)
        narrate("port 0 asked the kernel to choose: getsockname() says it "
                "chose %s",
                text);
    narrate("descriptor %d now owns %s, but it is not listening, so the "
            "kernel refuses connections to it:",
            fd, text);
    port = addr_for_clients((struct sockaddr *)&bound, host, sizeof host);
    narrate("  try: nc -vz %s %u    (Connection refused)", host, port);
    narrate("waiting; stop with Ctrl-C or: kill %ld", (long)getpid());

    /* Wait for SIGINT or SIGTERM: their handler ends the program. */
    for (;;)
        pause();
}
