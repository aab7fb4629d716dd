/*
 * load - many clients at once, or one that misbehaves on purpose: the
 * traffic nc cannot make, for the stage 6 tests. Every byte sent is
 * pseudo-random (NUL bytes included) and different for each client and each
 * phase, and every byte that comes back is checked against what was sent.
 *
 * usage: load [-c CLIENTS] [-b BYTES] [-r] [-s] [-w] [-T SECONDS] HOST PORT
 *             MODE        (load -h: a summary of what follows)
 *
 *   echo    CLIENTS connections at once. Each first sends a 16-byte greeting
 *           and waits for it to come back (at most 64 wait at a time, so
 *           the listen queue never overflows); then prints
 *             connected A closed B silent C
 *           (greeted back; closed by the server; no answer within 2 s).
 *           With -w it then waits, every connection open and idle, for a
 *           line (or end of input) on stdin. Then every connection that was
 *           greeted sends BYTES (default 1024) while reading the echo at the
 *           same time, shuts down its sending side after the last byte, and
 *           must get exactly those bytes back, then end of stream. Prints
 *             verified V of CLIENTS clients
 *           and exits 0 when V is CLIENTS.
 *   flood   CLIENTS connections (default 1) send without reading anything
 *           back: connection i (1 to CLIENTS) sends i x BYTES / CLIENTS
 *           bytes, so the last sends BYTES and the others a spread of
 *           sizes. Each sends until all is sent (then it shuts down its
 *           sending side at once) or the server stops taking data; when
 *           nothing has moved for 1 s, it prints
 *             sent S of T bytes without reading
 *           (totals). With -w it then waits for a line on stdin. Then all
 *           read everything back while sending the rest, check every byte
 *           and the end of stream after the last, and it prints
 *           "verified T bytes". The spread makes sure that, whatever the
 *           socket buffers hold, some connection ends its stream while the
 *           server still holds output for it, not yet sent. With -r they
 *           do not read back: all are closed with SO_LINGER {on, 0} at
 *           once, and it prints "reset N". (A reset after end of stream
 *           makes the server's next write fail with EPIPE, and raise
 *           SIGPIPE.)
 *   reset   CLIENTS connections, greeted as for echo; each then sends up to
 *           BYTES (default 65536) without reading, as far as the socket
 *           buffers take them, and then all are closed with SO_LINGER
 *           {on, 0} at once, so the server sees a reset on every one.
 *           Prints "reset N".
 *   cycles  CLIENTS times, one after the other: connect, send a greeting,
 *           read it back, close. Prints "cycles N".
 *
 * -s makes each connection's receive buffer and segment size small
 * (SO_RCVBUF, TCP_MAXSEG), so the kernel holds little of the echo and the
 * server has to keep the rest itself.
 *
 * Every wait is bounded: -T SECONDS (default 60) for the whole run.
 * It raises its own descriptor limit as far as CLIENTS needs.
 *
 * Exit status: 0; 1 a check failed or time ran out; 2 bad usage; 3 the
 * descriptor limit cannot be raised far enough for CLIENTS.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GREETING    16    /* bytes of each client's first exchange */
#define MAX_OPENING 64    /* connections opened and not yet greeted back */
#define SILENCE_MS  2000  /* nothing moved for this long: the rest are silent */
#define STALL_MS    1000  /* flood: nothing taken for this long: stalled */
#define CHUNK       65536 /* the most one read() or write() moves */

enum state {
    WAITING,    /* to be connected in this phase */
    CONNECTING, /* connect() in progress */
    TALKING,    /* sending and reading */
    DONE,       /* everything came back (and end of stream, if asked) */
    CLOSED,     /* the server closed or reset it before that */
    SILENT,     /* no answer in time, left out of later phases */
};

struct conn {
    int fd;
    enum state state;
    uint64_t seed;      /* which byte stream this phase sends */
    uint64_t total;     /* bytes to send in this phase */
    uint64_t sent, got; /* sent so far; received and checked so far */
    bool half_close;    /* shut down sending after the last byte, and
                           expect end of stream after the last byte back */
    bool reading;       /* false while a flood does not read */
};

static struct addrinfo *server;
static long long deadline_ms;
static bool failed; /* a byte came back wrong, or a call failed */
static bool small;  /* -s */
static bool resets; /* -r */

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* splitmix64: a good 64-bit mix, so each 8-byte block of each stream is
 * pseudo-random and can be computed from its position alone. */
static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15U;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9U;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBU;
    return x ^ (x >> 31);
}

/* Fills buf with bytes pos..pos+n of stream seed. */
static void fill(uint64_t seed, uint64_t pos, unsigned char *buf, size_t n)
{
    uint64_t word = mix((seed << 40) + (pos >> 3));

    for (size_t i = 0; i < n; i++, pos++) {
        if ((pos & 7) == 0)
            word = mix((seed << 40) + (pos >> 3));
        buf[i] = (unsigned char)(word >> ((pos & 7) * 8));
    }
}

/* A check failed on c: says what, at which byte of its stream. */
static void fail_conn(struct conn *c, const char *what, uint64_t at)
{
    fprintf(stderr, "load: fd %d: %s at byte %llu\n", c->fd, what,
            (unsigned long long)at);
    failed = true;
    c->state = CLOSED;
}

/* The server ended c (end of stream or an error) before it was done. */
static void closed_by_server(struct conn *c)
{
    c->state = CLOSED;
}

static void start(struct conn *c)
{
    int flags;

    c->fd = socket(server->ai_family, SOCK_STREAM, 0);
    if (c->fd == -1) {
        perror("load: socket");
        failed = true;
        c->state = CLOSED;
        return;
    }
    if (small) {
        int rcvbuf = 4096, mss = 536;
        if (setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) ==
                -1 ||
            setsockopt(c->fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss) == -1)
            perror("load: setsockopt (-s; going on)");
    }
    flags = fcntl(c->fd, F_GETFL);
    if (flags == -1 || fcntl(c->fd, F_SETFL, flags | O_NONBLOCK) == -1) {
        perror("load: fcntl");
        exit(1);
    }
    if (connect(c->fd, server->ai_addr, server->ai_addrlen) == 0)
        c->state = TALKING;
    else if (errno == EINPROGRESS)
        c->state = CONNECTING;
    else
        closed_by_server(c);
}

/* Sends the next piece of c's stream. Returns the bytes moved. */
static size_t send_some(struct conn *c)
{
    static unsigned char buf[CHUNK];
    uint64_t left = c->total - c->sent;
    size_t n = left < CHUNK ? (size_t)left : CHUNK;
    ssize_t w;

    fill(c->seed, c->sent, buf, n);
    w = write(c->fd, buf, n);
    if (w == -1) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            closed_by_server(c);
        return 0;
    }
    c->sent += (uint64_t)w;
    if (c->sent == c->total && c->half_close && shutdown(c->fd, SHUT_WR) == -1)
        closed_by_server(c);
    return (size_t)w;
}

/* Reads what came back and checks it. Returns the bytes moved (or 1 for a
 * change of state, which is progress too). */
static size_t read_some(struct conn *c)
{
    static unsigned char buf[CHUNK], want[CHUNK];
    ssize_t n = read(c->fd, buf, sizeof buf);

    if (n == 0) {
        if (c->half_close && c->got == c->total)
            c->state = DONE;
        else
            closed_by_server(c);
        return 1;
    }
    if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        closed_by_server(c);
        return 1;
    }
    if (c->got + (uint64_t)n > c->total) {
        fail_conn(c, "more bytes came back than were sent", c->total);
        return 1;
    }
    fill(c->seed, c->got, want, (size_t)n);
    if (memcmp(buf, want, (size_t)n) != 0) {
        size_t i = 0;
        while (buf[i] == want[i])
            i++;
        fail_conn(c, "a different byte came back", c->got + i);
        return 1;
    }
    c->got += (uint64_t)n;
    if (c->got == c->total && !c->half_close)
        c->state = DONE;
    return (size_t)n;
}

/* One step for c after poll() said revents. Returns progress (> 0). */
static size_t step(struct conn *c, short revents)
{
    size_t moved = 0;

    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 ||
            err != 0)
            closed_by_server(c);
        else
            c->state = TALKING;
        return 1;
    }
    if ((revents & POLLOUT) && c->sent < c->total)
        moved += send_some(c);
    if (c->state == TALKING && c->reading &&
        (revents & (POLLIN | POLLHUP | POLLERR)))
        moved += read_some(c);
    if (c->state == TALKING && !c->reading && (revents & (POLLHUP | POLLERR)))
        closed_by_server(c);
    return moved;
}

/*
 * Runs cs[0..n): the WAITING are connected (at most `limit` CONNECTING or
 * TALKING at once), and every connection talks until it is DONE or CLOSED.
 * Stops early when nothing moves for quiet_ms, or at the deadline.
 */
static void run(struct conn *cs, size_t n, size_t limit, long long quiet_ms)
{
    struct pollfd *pfds = calloc(n, sizeof *pfds);
    size_t *which = calloc(n, sizeof *which);
    size_t next = 0;
    long long last = now_ms();

    if (pfds == NULL || which == NULL) {
        perror("load: calloc");
        exit(1);
    }
    for (;;) {
        size_t np = 0, active = 0;
        long long now, wait;

        for (size_t i = 0; i < n; i++)
            if (cs[i].state == CONNECTING || cs[i].state == TALKING)
                active++;
        for (; next < n && active < limit; next++) {
            if (cs[next].state == WAITING) {
                start(&cs[next]);
                active++;
            }
        }
        for (size_t i = 0; i < n; i++) {
            short ev;
            if (cs[i].state == CONNECTING)
                ev = POLLOUT;
            else if (cs[i].state == TALKING)
                ev = (short)((cs[i].reading ? POLLIN : 0) |
                             (cs[i].sent < cs[i].total ? POLLOUT : 0));
            else
                continue;
            pfds[np] = (struct pollfd){.fd = cs[i].fd, .events = ev};
            which[np++] = i;
        }
        if (active == 0 && next == n)
            break; /* (a connection with nothing to do, like a flood that
                      sent all and is not reading yet, still waits) */
        now = now_ms();
        wait = last + quiet_ms - now;
        if (deadline_ms - now < wait)
            wait = deadline_ms - now;
        if (wait <= 0)
            break;
        if (poll(pfds, (nfds_t)np, (int)wait) == -1) {
            if (errno == EINTR)
                continue;
            perror("load: poll");
            exit(1);
        }
        for (size_t k = 0; k < np; k++)
            if (pfds[k].revents != 0 &&
                step(&cs[which[k]], pfds[k].revents) > 0)
                last = now_ms();
    }
    free(pfds);
    free(which);
}

/* After run(): those still under way get no more chances. */
static void silence_rest(struct conn *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (cs[i].state == WAITING || cs[i].state == CONNECTING ||
            cs[i].state == TALKING)
            cs[i].state = SILENT;
}

static size_t count(const struct conn *cs, size_t n, enum state s)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        k += cs[i].state == s;
    return k;
}

/* Sets every connection up to greet the server: connect, send GREETING
 * bytes, get them back. */
static void greet_all(struct conn *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cs[i] = (struct conn){.fd = -1,
                              .state = WAITING,
                              .seed = 2 * i + 1,
                              .total = GREETING,
                              .reading = true};
    run(cs, n, MAX_OPENING, SILENCE_MS);
    silence_rest(cs, n);
}

/* With -w: waits for a line, or end of input, on stdin. */
static void hold(bool wait)
{
    char line[64];

    if (wait && fgets(line, sizeof line, stdin) == NULL && ferror(stdin)) {
        perror("load: stdin");
        exit(1);
    }
}

static void close_all(struct conn *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (cs[i].fd != -1 && close(cs[i].fd) == -1)
            perror("load: close");
}

static int mode_echo(struct conn *cs, size_t n, uint64_t bytes, bool wait)
{
    size_t verified;

    greet_all(cs, n);
    printf("connected %zu closed %zu silent %zu\n", count(cs, n, DONE),
           count(cs, n, CLOSED), count(cs, n, SILENT));
    fflush(stdout);
    hold(wait);
    for (size_t i = 0; i < n; i++) {
        if (cs[i].state != DONE)
            continue;
        cs[i].state = TALKING;
        cs[i].seed = 2 * i + 2;
        cs[i].total = bytes;
        cs[i].sent = cs[i].got = 0;
        cs[i].half_close = true;
        if (bytes == 0 && shutdown(cs[i].fd, SHUT_WR) == -1)
            closed_by_server(&cs[i]);
    }
    run(cs, n, n, SILENCE_MS);
    silence_rest(cs, n);
    verified = count(cs, n, DONE);
    printf("verified %zu of %zu clients\n", verified, n);
    close_all(cs, n);
    return verified == n && !failed ? 0 : 1;
}

/* Closes every connection still open with SO_LINGER {on, 0}: a reset. */
static void reset_all(struct conn *cs, size_t n)
{
    struct linger lg = {1, 0};

    for (size_t i = 0; i < n; i++) {
        if (cs[i].fd == -1)
            continue;
        if (setsockopt(cs[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == -1)
            perror("load: setsockopt SO_LINGER");
        if (close(cs[i].fd) == -1)
            perror("load: close");
        cs[i].fd = -1;
    }
}

static int mode_flood(struct conn *cs, size_t n, uint64_t bytes, bool wait)
{
    uint64_t sent = 0, total = 0, got = 0;

    greet_all(cs, n);
    if (count(cs, n, DONE) != n) {
        fprintf(stderr, "load: only %zu of %zu greeted back\n",
                count(cs, n, DONE), n);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        cs[i].state = TALKING;
        cs[i].seed = 2 * i + 2;
        cs[i].total = bytes / n * (i + 1) + bytes % n * (i + 1) / n;
        cs[i].sent = cs[i].got = 0;
        cs[i].half_close = true;
        cs[i].reading = false;
        if (cs[i].total == 0 && shutdown(cs[i].fd, SHUT_WR) == -1)
            closed_by_server(&cs[i]);
        total += cs[i].total;
    }
    /* Send without reading until everything is sent, or the server has
     * taken nothing for STALL_MS. */
    run(cs, n, n, STALL_MS);
    for (size_t i = 0; i < n; i++)
        sent += cs[i].sent;
    if (count(cs, n, TALKING) != n) {
        fprintf(stderr, "load: the server ended %zu connections\n",
                n - count(cs, n, TALKING));
        return 1;
    }
    printf("sent %llu of %llu bytes without reading\n",
           (unsigned long long)sent, (unsigned long long)total);
    fflush(stdout);
    hold(wait);
    if (resets) {
        reset_all(cs, n);
        printf("reset %zu\n", n);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        cs[i].reading = true;
    run(cs, n, n, SILENCE_MS);
    silence_rest(cs, n);
    for (size_t i = 0; i < n; i++)
        got += cs[i].got;
    close_all(cs, n);
    if (count(cs, n, DONE) != n || failed) {
        fprintf(stderr,
                "load: %llu of %llu bytes came back; %zu of %zu "
                "connections ended early\n",
                (unsigned long long)got, (unsigned long long)total,
                count(cs, n, CLOSED), n);
        return 1;
    }
    printf("verified %llu bytes\n", (unsigned long long)got);
    return 0;
}

static int mode_reset(struct conn *cs, size_t n, uint64_t bytes)
{
    static unsigned char buf[CHUNK];
    size_t greeted;

    greet_all(cs, n);
    greeted = count(cs, n, DONE);
    for (size_t i = 0; i < n; i++) {
        uint64_t left = bytes;
        if (cs[i].state != DONE)
            continue;
        while (left > 0) { /* as much as the buffers take, never waiting */
            size_t want = left < CHUNK ? (size_t)left : CHUNK;
            ssize_t w = write(cs[i].fd, buf, want);
            if (w <= 0)
                break;
            left -= (uint64_t)w;
        }
    }
    reset_all(cs, n);
    printf("reset %zu\n", greeted);
    return greeted == n ? 0 : 1;
}

static int mode_cycles(size_t n)
{
    struct conn c;

    for (size_t i = 0; i < n; i++) {
        greet_all(&c, 1);
        if (c.state != DONE) {
            fprintf(stderr, "load: cycle %zu: no echo\n", i + 1);
            return 1;
        }
        close_all(&c, 1);
    }
    printf("cycles %zu\n", n);
    return 0;
}

/* Raises the soft descriptor limit so that n connections fit. */
static void room_for(size_t n)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)n + 16;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        perror("load: getrlimit");
        exit(1);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= need)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr,
                "load: %zu clients need %llu descriptors; the hard "
                "limit is %llu\n",
                n, (unsigned long long)need, (unsigned long long)rl.rlim_max);
        exit(3);
    }
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
        perror("load: setrlimit");
        exit(3);
    }
}

static const char usage_line[] =
    "usage: load [-c CLIENTS] [-b BYTES] [-r] [-s] [-w] [-T SECONDS] "
    "HOST PORT echo|flood|reset|cycles\n";

static void usage(void)
{
    fprintf(stderr, "%s(load -h explains the modes and options)\n", usage_line);
    exit(2);
}

/* -h: what the lessons need to read a load command line. */
static void help(void)
{
    printf(
        "load: many clients at once, each checking every byte it gets back\n\n"
        "%s\n"
        "modes:\n"
        "  echo    connect CLIENTS, greet each; print 'connected A closed "
        "B silent C';\n"
        "          then each sends BYTES (1024), half-closes, checks the "
        "echo: 'verified V of N clients'\n"
        "  flood   CLIENTS send up to BYTES without reading: 'sent S of T "
        "bytes without reading';\n"
        "          then read everything back and check it: 'verified T "
        "bytes'\n"
        "  reset   CLIENTS greeted, send up to BYTES (65536) unread, then "
        "all reset: 'reset N'\n"
        "  cycles  CLIENTS times in a row: connect, greet, read back, "
        "close: 'cycles N'\n\n"
        "options:\n"
        "  -c CLIENTS   how many connections (default 1)\n"
        "  -b BYTES     how much each sends (per mode, above)\n"
        "  -r           flood: reset every connection instead of reading "
        "back: 'reset N'\n"
        "  -s           small receive buffers and segments, so the "
        "server must keep the echo itself\n"
        "  -w           echo and flood: wait, connections open, for a "
        "line (or end) on stdin first\n"
        "  -T SECONDS   bound the whole run (default 60)\n"
        "  -h           print this help and exit\n\n"
        "Exit status: 0; 1 a check failed or time ran out; 2 bad usage; "
        "3 the descriptor limit is too low for CLIENTS.\n",
        usage_line);
    exit(0);
}

static unsigned long long number(const char *text)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || *text == '-')
        usage();
    return v;
}

int main(int argc, char **argv)
{
    struct addrinfo hints;
    size_t clients = 1;
    unsigned long long bytes = 0, seconds = 60;
    bool bytes_given = false, wait = false;
    const char *mode;
    struct conn *cs;
    int opt, rc;

    while ((opt = getopt(argc, argv, "c:b:rswT:h")) != -1) {
        switch (opt) {
        case 'h':
            help();
            break;
        case 'c':
            clients = (size_t)number(optarg);
            break;
        case 'b':
            bytes = number(optarg);
            bytes_given = true;
            break;
        case 'r':
            resets = true;
            break;
        case 's':
            small = true;
            break;
        case 'w':
            wait = true;
            break;
        case 'T':
            seconds = number(optarg);
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 3 || clients == 0)
        usage();
    mode = argv[optind + 2];
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if ((rc = getaddrinfo(argv[optind], argv[optind + 1], &hints, &server)) !=
        0) {
        fprintf(stderr, "load: %s %s: %s\n", argv[optind], argv[optind + 1],
                gai_strerror(rc));
        return 2;
    }
    deadline_ms = now_ms() + (long long)seconds * 1000;
    room_for(clients);
    cs = calloc(clients, sizeof *cs);
    if (cs == NULL) {
        perror("load: calloc");
        return 1;
    }
    if (strcmp(mode, "echo") == 0)
        rc = mode_echo(cs, clients, bytes_given ? bytes : 1024, wait);
    else if (strcmp(mode, "flood") == 0)
        rc = mode_flood(cs, clients, bytes, wait);
    else if (strcmp(mode, "reset") == 0)
        rc = mode_reset(cs, clients, bytes_given ? bytes : 65536);
    else if (strcmp(mode, "cycles") == 0)
        rc = mode_cycles(clients);
    else
        usage();
    fflush(stdout);
    free(cs);
    freeaddrinfo(server);
    return rc;
}
