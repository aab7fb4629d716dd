/*
 * stage1_socket - lesson 1: socket() makes an endpoint, and nothing more.
 *
 * What this stage adds: the first call of every TCP server. socket() asks
 * the kernel for a new TCP endpoint and hands back a file descriptor, a small
 * number that names the kernel object from now on. The socket has no address,
 * no port and no peer yet; the program shows all of that and exits.
 *
 * Run it:    bin/stage1_socket        (IPv6: bin/stage1_socket -6)
 * Watch it:  bin/stage1_socket -s pauses before each call; meanwhile, in
 *            another terminal, `ls -l /proc/PID/fd` shows the descriptor as
 *            socket:[INODE]. `strace -e trace=network bin/stage1_socket`
 *            shows the calls the kernel sees.
 * Read:      man 2 socket, man 7 socket, man 7 ip, man 7 ipv6,
 *            man 2 getsockname, man 2 getpeername
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const struct stage_option own_options[] = {
    {'6', NULL, "make an IPv6 socket (AF_INET6) instead of IPv4 (AF_INET)"},
    {0, NULL, NULL},
};

static const char *set_option(char letter, const char *arg, void *ctx)
{
    int *family = ctx;

    (void)arg;
    if (letter == '6')
        *family = AF_INET6;
    return NULL;
}

/* Says why socket() returned the number it did: every lower descriptor is
 * already open, because a new descriptor is always the lowest free one. */
static void explain_number(int fd)
{
    static const char *const std_names[] = {"stdin", "stdout", "stderr"};
    char list[160] = "";
    size_t used = 0;

    if (fd == 0) {
        narrate("  why 0: descriptor 0 (stdin) was closed, and a new one is "
                "always the lowest free number");
        return;
    }
    for (int i = 0; i < fd && used < sizeof list - 24; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%d%s%s%s",
                                 i > 0 ? ", " : "", i, i < 3 ? " (" : "",
                                 i < 3 ? std_names[i] : "", i < 3 ? ")" : "");
    narrate("  why %d: descriptors %s%s are already open, and a new one is "
            "always the lowest free number",
            fd, list, used >= sizeof list - 24 ? "..." : "");
}

/* On Linux, /proc shows what a descriptor number stands for. */
static void show_proc_link(int fd)
{
#ifdef __linux__
    char path[64], target[128];
    ssize_t n;

    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    n = readlink(path, target, sizeof target - 1);
    if (n == -1) {
        warn_errno(errno, "readlink %s", path);
        return;
    }
    target[n] = '\0';
    narrate("  /proc/%ld/fd/%d -> %s: the kernel object behind the number",
            (long)getpid(), fd, target);
#else
    (void)fd;
    narrate("  (no /proc/PID/fd on this system: try `lsof -p %ld`)",
            (long)getpid());
#endif
}

int main(int argc, char **argv)
{
    int family = AF_INET;
    const struct stage_info info = {
        .name = "stage1_socket",
        .summary = "create a TCP socket and show what the kernel handed back",
        .standard = OPT_STEP,
        .extra = own_options,
        .on_extra = set_option,
        .ctx = &family,
    };
    struct options opt;
    const char *family_name;
    struct sockaddr_storage addr;
    socklen_t len;
    char text[ADDR_TEXT_MAX];
    int fd, type, rcvbuf, sndbuf;

    options_parse(&opt, &info, argc, argv);
    exit_on_signals();
    family_name = family == AF_INET6 ? "AF_INET6" : "AF_INET";

    step("socket(%s, SOCK_STREAM, 0) asks the kernel for a TCP endpoint",
         family_name);
    fd = socket(family, SOCK_STREAM, 0);
    if (fd == -1)
        die("socket(%s, SOCK_STREAM, 0)", family_name);
    narrate("socket(%s, SOCK_STREAM, 0) returned descriptor %d", family_name,
            fd);
    explain_number(fd);
    show_proc_link(fd);

    /* getsockname(): the length is value-result. We say how much room the
     * buffer has; the kernel says how much of it the address filled. */
    len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) == -1)
        die("getsockname fd %d", fd);
    narrate("  family:  %s (getsockname filled %u of the %zu bytes offered)",
            addr.ss_family == AF_INET6 ? "AF_INET6, IPv6" : "AF_INET, IPv4",
            (unsigned)len, sizeof addr);
    narrate("  address: %s: no address and no port yet (bind() gives them, "
            "stage 2)",
            addr_format((struct sockaddr *)&addr, len, text, sizeof text));

    len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1)
        die("getsockopt SO_TYPE fd %d", fd);
    narrate("  type:    %s (from getsockopt SO_TYPE)",
            type == SOCK_STREAM ? "SOCK_STREAM, a reliable byte stream: TCP"
                                : "not SOCK_STREAM (unexpected)");

    len = sizeof addr;
    /* A socket that has never connected has no peer, so no test sees the
     * first branch; it is there so that the program never claims a fact
     * the kernel did not confirm. */
    if (getpeername(fd, (struct sockaddr *)&addr, &len) == 0)
        narrate("  peer:    %s (unexpected for a new socket)",
                addr_format((struct sockaddr *)&addr, len, text, sizeof text));
    else if (errno == ENOTCONN)
        narrate("  peer:    none: getpeername() fails with ENOTCONN (%s)",
                strerror(errno));
    else
        die("getpeername fd %d", fd);

    len = sizeof rcvbuf;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len) == -1)
        die("getsockopt SO_RCVBUF fd %d", fd);
    len = sizeof sndbuf;
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == -1)
        die("getsockopt SO_SNDBUF fd %d", fd);
    narrate("  buffers: receive %d bytes, send %d bytes (SO_RCVBUF, "
            "SO_SNDBUF): the kernel keeps them, not the program",
            rcvbuf, sndbuf);

    step("close(%d) gives the socket back to the kernel, and the program ends",
         fd);
    if (close(fd) == -1)
        die("close fd %d", fd);
    narrate("closed descriptor %d; nothing was sent on the network", fd);
    return 0;
}
