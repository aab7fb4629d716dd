/*
 * stage2_bind - lesson 2: bind() gives the socket an address.
 *
 * What this stage adds to stage 1: setsockopt(SO_REUSEADDR) and bind(). The
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
 *            man 7 socket, man 3 inet_pton
 */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const struct stage_info info = {
        .name = "stage2_bind",
        .summary = "create a TCP socket, bind it to an address, and wait",
        .standard = OPT_ADDR | OPT_PORT | OPT_QUIET | OPT_STEP | OPT_NOREUSE,
    };
    struct options opt;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char text[ADDR_TEXT_MAX], host[ADDR_TEXT_MAX];
    unsigned port;
    int fd, on = 1;

    options_parse(&opt, &info, argc, argv);
    exit_on_signals();
    /* options_parse has checked the literal already; this cannot fail. */
    if (addr_parse(opt.addr, opt.port, &addr, &addrlen) == -1)
        usage_error("-a %s: not an address literal", opt.addr);
    addr_format((struct sockaddr *)&addr, addrlen, text, sizeof text);

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
    ready_line("bound to", (struct sockaddr *)&addr, addrlen);
    addr_format((struct sockaddr *)&addr, addrlen, text, sizeof text);
    if (opt.port == 0)
        narrate("port 0 asked the kernel to choose: getsockname() says it "
                "chose %s",
                text);
    narrate("descriptor %d now owns %s, but it is not listening, so the "
            "kernel refuses connections to it:",
            fd, text);
    port = addr_for_clients((struct sockaddr *)&addr, host, sizeof host);
    narrate("  try: nc -vz %s %u    (Connection refused)", host, port);
    narrate("waiting; stop with Ctrl-C or: kill %ld", (long)getpid());

    /* Wait for SIGINT or SIGTERM: their handler ends the program. */
    for (;;)
        pause();
}
