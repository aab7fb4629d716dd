/*
 * churn - a connect flood, and how long an existing client waits meanwhile.
 *
 * usage: churn [-j PROCS] [-d SECONDS] HOST PORT
 *
 * One client connects first and is echoed once. Then PROCS processes
 * (default 4) connect and close (by a reset) as fast as they can for
 * SECONDS (default 3, at most 60), while the first client sends one byte at a
 * time and times each echo. At the end it prints connections N pings P max_ms M
 * p99_ms Q (connections the flood made; round trips of the first client; the
 * slowest and the 99th percentile of them, in ms). Every wait is bounded:
 * a ping with no answer for 10 s fails the run. Loopback traffic only, to
 * the server the test started.
 *
 * Exit status: 0; 1 a call failed, an echo was wrong or missing; 2 bad
 * usage.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PINGS    1000000
#define PING_WAIT_MS 10000

static struct addrinfo *server;
/* Every round trip of the first client, in microseconds. */
static long long rtt[MAX_PINGS];

static long long now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int dial(void)
{
    int fd = socket(server->ai_family, SOCK_STREAM, 0);

    if (fd == -1)
        return -1;
    if (connect(fd, server->ai_addr, server->ai_addrlen) == -1) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

/* One flooding process: connect and close until the deadline; the count
 * goes to the parent through the pipe. Each closes with a reset
 * (SO_LINGER {on, 0}), so that no TIME_WAIT record holds its port: tens of
 * thousands of connections would otherwise use up the ephemeral ports. */
static void flood(long long until, int out)
{
    struct linger reset = {1, 0};
    unsigned long n = 0;

    while (now_us() < until) {
        int fd = dial();
        if (fd == -1) {
            if (errno == ECONNREFUSED || errno == EAGAIN ||
                errno == EADDRNOTAVAIL || errno == ETIMEDOUT)
                continue; /* the queue was full, or ports ran short */
            perror("churn: connect");
            _exit(1);
        }
        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset) == -1)
            _exit(1);
        close(fd);
        n++;
    }
    if (write(out, &n, sizeof n) != (ssize_t)sizeof n)
        _exit(1);
    _exit(0);
}

/* One byte out, the same byte back; returns the round trip in us, or -1. */
static long long ping(int fd, unsigned char byte)
{
    long long t0 = now_us();
    unsigned char back;
    struct pollfd p = {.fd = fd, .events = POLLIN};

    if (write(fd, &byte, 1) != 1)
        return -1;
    if (poll(&p, 1, PING_WAIT_MS) != 1 || read(fd, &back, 1) != 1 ||
        back != byte)
        return -1;
    return now_us() - t0;
}

static int by_value(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    long procs = 4, seconds = 3, pings = 0;
    unsigned long total = 0;
    long long until;
    int opt, fd, fds[2], on = 1, status = 0;

    while ((opt = getopt(argc, argv, "j:d:")) != -1) {
        if (opt == 'j')
            procs = strtol(optarg, NULL, 10);
        else if (opt == 'd')
            seconds = strtol(optarg, NULL, 10);
        else
            goto usage;
    }
    if (argc - optind != 2 || procs < 1 || procs > 64 || seconds < 1 ||
        seconds > 60)
        goto usage;
    if (getaddrinfo(argv[optind], argv[optind + 1], &hints, &server) != 0) {
        fprintf(stderr, "churn: %s %s: not an address\n", argv[optind],
                argv[optind + 1]);
        return 2;
    }
    fd = dial();
    if (fd == -1 || pipe(fds) == -1 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == -1 ||
        ping(fd, 'a') < 0) {
        perror("churn: the first client");
        return 1;
    }
    until = now_us() + seconds * 1000000LL;
    for (long i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid == -1) {
            perror("churn: fork");
            return 1;
        }
        if (pid == 0)
            flood(until, fds[1]);
    }
    while (now_us() < until && pings < MAX_PINGS) {
        long long t = ping(fd, (unsigned char)('a' + pings % 26));
        if (t < 0) {
            fprintf(stderr, "churn: ping %ld: no echo within %d ms\n", pings,
                    PING_WAIT_MS);
            status = 1;
            break;
        }
        rtt[pings++] = t;
    }
    for (long i = 0; i < procs; i++) {
        unsigned long n;
        int st;
        if (read(fds[0], &n, sizeof n) == (ssize_t)sizeof n)
            total += n;
        if (wait(&st) == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            status = 1;
    }
    if (pings == 0)
        return 1;
    qsort(rtt, (size_t)pings, sizeof *rtt, by_value);
    /* Times in microseconds, printed in ms with one decimal. */
    printf("connections %lu pings %ld max_ms %lld.%lld p99_ms %lld.%lld\n",
           total, pings, rtt[pings - 1] / 1000, rtt[pings - 1] % 1000 / 100,
           rtt[pings * 99 / 100] / 1000, rtt[pings * 99 / 100] % 1000 / 100);
    close(fd);
    freeaddrinfo(server);
    return status;
usage:
    fprintf(stderr, "usage: churn [-j PROCS] [-d SECONDS] HOST PORT\n");
    return 2;
}
