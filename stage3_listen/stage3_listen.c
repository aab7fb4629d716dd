/*
 * stage3_listen - lesson 3: listen() turns the socket passive.
 *
 * What this stage adds to stage 2: listen(backlog). From now on the kernel
 * answers connection requests by itself: it completes the three-way handshake
 * and queues the finished connection, without any help from the program.
 * This stage never calls accept(), so the queue only fills: on Linux up to
 * backlog + 1 connections, after which new handshakes are left unanswered
 * until there is room. The program waits until SIGINT or SIGTERM.
 *
 * Run it:    bin/stage3_listen -b 2
 * Watch it:  run a second copy on the same port: EADDRINUSE, SO_REUSEADDR
 *            or not, because this one listens.
 *            Connect a few times (`nc 127.0.0.1 6969` in other terminals):
 *            each connects at once, though nobody accepts.
 *            `ss -ltn 'sport = :6969'`: Recv-Q counts the queued connections,
 *            Send-Q is the backlog. `cat /proc/sys/net/core/somaxconn`: the
 *            kernel's cap on the backlog.
 * Read:      man 2 listen, man 7 tcp (tcp_max_syn_backlog,
 *            tcp_abort_on_overflow), man 8 ss
 */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The kernel's cap on the backlog; on Linux listen() silently lowers a
 * larger backlog to it. Returns -1 where it cannot be read. */
static long read_somaxconn(void)
{
#ifdef __linux__
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");
    char line[32], *end;
    long value = -1;

    if (f == NULL)
        return -1;
    /* strtol, not fscanf("%ld"): it reports a number out of range. The
     * kernel always writes a number here, and closing a file that was only
     * read cannot lose data, so no test reaches the two "value = -1" lines
     * below: they keep a strange /proc from being taken for a cap. */
    if (fgets(line, sizeof line, f) != NULL) {
        errno = 0;
        value = strtol(line, &end, 10);
        if (errno != 0 || end == line)
            value = -1;
    }
    if (fclose(f) == EOF)
        value = -1;
    return value;
#else
    return -1;
#endif
}

/* Tells the learner what backlog the kernel will really use. */
static void explain_backlog(int backlog)
{
    long cap = read_somaxconn();

    if (cap < 0) {
        narrate("backlog %d (the kernel's cap is not readable here: "
                "`sysctl kern.ipc.somaxconn` on macOS, "
                "kern.ipc.soacceptqueue on FreeBSD, kern.somaxconn on "
                "OpenBSD)",
                backlog);
    } else if (backlog > cap) {
        narrate("note: backlog %d is above net.core.somaxconn = %ld, so the "
                "kernel silently uses %ld (ss shows it as Send-Q)",
                backlog, cap, cap);
    } else {
        narrate("backlog %d (net.core.somaxconn = %ld caps it): Linux "
                "queues up to backlog + 1 = %ld completed connections",
                backlog, cap, (long)backlog + 1);
    }
}

int main(int argc, char **argv)
{
    const struct stage_info info = {
        .name = "stage3_listen",
        .summary = "bind a TCP socket, listen(), and let the kernel queue "
                   "connections that nobody accepts",
        .standard = OPT_ADDR | OPT_PORT | OPT_BACKLOG | OPT_QUIET | OPT_STEP |
                    OPT_NOREUSE,
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
        narrate("SO_REUSEADDR not set (-R): bind() fails with EADDRINUSE if "
                "this port still has connections in TIME_WAIT");
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
    if (opt.port == 0)
        narrate("port 0 asked the kernel to choose: getsockname() says it "
                "chose %s",
                text);

    /* listen() makes the socket passive: it will never connect, read or
     * write; from now on it only produces connected sockets. */
    step("listen(%d) makes the socket passive; the kernel starts queueing "
         "connections",
         opt.backlog);
    if (listen(fd, opt.backlog) == -1)
        die("listen %s backlog %d", text, opt.backlog);
    ready_line("listening on", (struct sockaddr *)&addr, addrlen);
    explain_backlog(opt.backlog);
    port = addr_for_clients((struct sockaddr *)&addr, host, sizeof host);
    narrate("this program never calls accept(), yet clients connect: the "
            "kernel does the handshake. Try, in other terminals:");
    narrate("  nc %s %u    (connects at once; what you type is queued, "
            "never echoed)",
            host, port);
    narrate("  ss -ltn 'sport = :%u'    (Recv-Q: connections waiting for "
            "accept(); Send-Q: the backlog)",
            port);
    narrate("waiting; stop with Ctrl-C or: kill %ld", (long)getpid());

    /* Wait for SIGINT or SIGTERM: their handler ends the program. */
    for (;;)
        pause();
}
