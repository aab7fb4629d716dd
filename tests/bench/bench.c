/*
 * bench - the load generator of make bench: starts one echo server, drives
 * it through the bench's cases from this one process (poll() over the
 * connections of the case at hand), checks every byte that comes back, and
 * prints one CSV row per case with what it measured.
 *
 * usage: bench [-Q] [-H] [-n NAME] [-w MS] [-x CASE=REASON]... -- PROGRAM
 *              [ARGS...]
 *        bench [-Q] [-H] [-n NAME] [-w MS] [-x CASE=REASON]... -P PORT
 *              [-i PID]
 *
 * It runs PROGRAM ARGS -q -a 127.0.0.1 -p 0, reads the port from its
 * readiness line, and runs the cases in this order (-Q: the quick counts,
 * in brackets):
 *
 *   idle       no client: the server's CPU over a quiet window;
 *   pingpong   N clients (1, 10, 100, 1000 [1, 10, 100]), each sends a
 *              64-byte message and waits for all of it to come back before
 *              the next: round trips per second and their latency;
 *   stream     N clients (1, 100 [1, 10]) send without waiting, reading the
 *              echo as it comes, at most 256 KiB ahead of it: MiB per second;
 *   hold       on a freshly started server, 10,000 [200] connections, each
 *              greeted (16 bytes there and back), then: the server's memory
 *              growth per connection and its CPU while all are idle
 *              (hold-idle), then 10 of them ping-pong while the rest stay
 *              idle (hold-busy).
 *
 * PROGRAM may be a wrapper that execs the server, such as taskset -c 1
 * SERVER (then name the server with -n). With -P it drives the server
 * already listening on 127.0.0.1:PORT instead: its CPU and memory are read
 * only if -i gives its PID, and the hold case runs on that same server (the
 * tests use this to start and stop the server themselves).
 *
 * A timed case lasts -w MS (default 2000 [250]). Server CPU time is read
 * from /proc/PID/schedstat (nanoseconds on the CPU) at the start and the end
 * of the window, memory from /proc/PID/status (VmRSS). At the end of the
 * window every client finishes its message, shuts down its sending side and
 * must get back every byte it sent, then end of stream: a byte that differs,
 * one too many, or one missing ends the run with a line on stderr saying
 * which client, at which byte of its stream, what was expected and what
 * came, and the exit status 1.
 *
 * -x CASE=REASON marks a case "n/a" (a server that cannot do it: the reason
 * goes in the row), -n NAME names the server in the rows (default: the
 * program's file name), -H prints the CSV header first. Rows go to stdout,
 * progress and errors to stderr.
 *
 * Clients connect from 127.0.0.1 on ephemeral ports, 64 connecting at a
 * time so the listen queue never overflows. Linux shares an ephemeral port
 * between connections to different servers (a different 4-tuple), and a
 * server started with -p 0 gets a new port each time, so the TIME_WAIT
 * connections of one run do not starve the next.
 *
 * Every wait is bounded: connecting 20 s [5 s], the end of a case 10 s
 * [3 s], the server's readiness line and its exit 5 s. It raises its own
 * descriptor limit (the server inherits it) and ignores SIGPIPE.
 *
 * Exit status: 0; 1 a check failed, a wait ran out or a call failed; 2 bad
 * usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <time.h>
#include <unistd.h>

#define MSG_BYTES    64      /* one ping-pong message */
#define GREET_BYTES  16      /* the hold case's greeting */
#define STREAM_AHEAD 262144  /* stream: the most sent and not yet back */
#define IO_CHUNK     65536   /* the most one read() or write() moves */
#define OPENING      64      /* connections being opened at once */
#define HOLD_BUSY    10      /* hold-busy: clients that ping-pong */
#define MAX_SAMPLES  4194304 /* latencies kept for the percentiles */
#define MAX_NA       8       /* -x given at most this many times */
#define NS           1000000000LL

#if defined(__GNUC__) || defined(__clang__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

/* One client connection and where its byte stream stands. Byte p of client
 * k's stream is pattern byte p of key k, so nothing sent is stored. */
struct client {
    int fd;
    uint32_t key;
    uint64_t sent;   /* bytes written */
    uint64_t got;    /* bytes read back and checked */
    uint64_t target; /* send up to here (the end of the current message) */
    long long began; /* ns: when the current message was started */
    bool shut;       /* sending side shut down */
    bool done;       /* ended: all back and end of stream, or failed */
    bool served;     /* a round trip (or stream bytes) came back in time */
};

/* What one timed case measured. */
struct result {
    const char *name;
    size_t conns, busy;
    size_t bytes;     /* message size, or the stream's lead */
    double rate;      /* per second, of unit */
    const char *unit; /* "rt/s" or "MiB/s" */
    double p50_us, p99_us;
    double cpu_us_per_op; /* server CPU per round trip or per MiB */
    double cpu_pct;       /* server CPU, % of one core */
    size_t served;
    double mem_per_conn; /* bytes, hold-idle; < 0: not measured */
    const char *note;
};

/* The running server. */
struct server {
    pid_t pid;
    int out; /* the read end of its stdout */
    unsigned port;
};

static struct {
    bool quick;
    long long window_ns, connect_ns, drain_ns;
    const char *name;
    char **argv; /* the server's command line, with our options */
    const char *na_case[MAX_NA];
    const char *na_why[MAX_NA];
    size_t na_count;
    unsigned attach_port; /* -P: drive this running server; 0: start one */
    pid_t attach_pid;     /* -i: its PID, for the readings; 0: none */
} cfg;

static bool failed; /* an integrity check or a call failed */
static const char *case_label = "";
static uint32_t *samples;
static size_t nsamples;

static long long now_ns(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1) {
        perror("bench: clock_gettime");
        exit(1);
    }
    return (long long)ts.tv_sec * NS + ts.tv_nsec;
}

static void pause_ns(long long ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / NS),
                          .tv_nsec = (long)(ns % NS)};

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* ---- the byte streams ---------------------------------------------------- */

/* A 32-bit integer hash (xorshift-multiply), so that each 4-byte word of a
 * stream comes from its key and position alone. */
static uint32_t scramble(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* Writes bytes pos..pos+n of stream key into buf. */
static void pattern(uint32_t key, uint64_t pos, unsigned char *buf, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint64_t word_at = (pos + i) / 4;
        uint32_t w = scramble((uint32_t)word_at ^ scramble(key) ^
                              (uint32_t)(word_at >> 32));
        for (unsigned b = (unsigned)((pos + i) % 4); b < 4 && i < n; b++)
            buf[i++] = (unsigned char)(w >> (8 * b));
    }
}

/* ---- the server under test ---------------------------------------------- */

static bool na(const char *name, const char **why)
{
    for (size_t i = 0; i < cfg.na_count; i++)
        if (strcmp(cfg.na_case[i], name) == 0) {
            *why = cfg.na_why[i];
            return true;
        }
    return false;
}

/* Reads the readiness line "listening on ADDR:PORT" from the server's
 * stdout, within 5 s. Returns 0 and sets s->port, or -1. */
static int read_port(struct server *s)
{
    char line[256] = "";
    size_t len = 0;
    long long end = now_ns() + 5 * NS;
    const char *colon;
    unsigned long port;
    char *tail, ch = '\0';

    while (ch != '\n') {
        struct pollfd p = {.fd = s->out, .events = POLLIN};
        long long left = end - now_ns();
        if (left <= 0 || len + 1 >= sizeof line)
            return -1;
        if (poll(&p, 1, (int)(left / 1000000 + 1)) == -1 && errno != EINTR)
            return -1;
        if (p.revents == 0)
            continue;
        if (read(s->out, &ch, 1) != 1)
            return -1;
        if (ch != '\n')
            line[len++] = ch;
    }
    colon = strrchr(line, ':');
    if (strncmp(line, "listening on ", 13) != 0 || colon == NULL)
        return -1;
    errno = 0;
    port = strtoul(colon + 1, &tail, 10);
    if (errno != 0 || *tail != '\0' || port == 0 || port > 65535)
        return -1;
    s->port = (unsigned)port;
    return 0;
}

/* Starts the server; exits 1 if it does not say it listens. */
static void start_server(struct server *s)
{
    int fds[2];

    if (cfg.attach_port != 0) {
        s->pid = cfg.attach_pid;
        s->port = cfg.attach_port;
        s->out = -1;
        return;
    }
    if (pipe(fds) == -1) {
        perror("bench: pipe");
        exit(1);
    }
    s->pid = fork();
    if (s->pid == -1) {
        perror("bench: fork");
        exit(1);
    }
    if (s->pid == 0) {
#ifdef __linux__
        /* Should the bench be killed (by timeout, say), so is the server. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1)
            _exit(127);
#endif
        if (dup2(fds[1], STDOUT_FILENO) == -1)
            _exit(127);
        (void)close(fds[0]);
        (void)close(fds[1]);
        execvp(cfg.argv[0], cfg.argv);
        fprintf(stderr, "bench: exec %s: %s\n", cfg.argv[0], strerror(errno));
        _exit(127);
    }
    if (close(fds[1]) == -1) {
        perror("bench: close");
        exit(1);
    }
    s->out = fds[0];
    if (read_port(s) == -1) {
        fprintf(stderr, "bench: %s: no readiness line within 5 s\n",
                cfg.argv[0]);
        (void)kill(s->pid, SIGKILL);
        (void)waitpid(s->pid, NULL, 0);
        exit(1);
    }
}

/* Stops the server with SIGTERM (SIGKILL after 5 s). Returns 0 if it ended
 * with status 0, as the contract says, else -1. */
static int stop_server(struct server *s)
{
    long long end = now_ns() + 5 * NS;
    int status;
    pid_t r;

    if (cfg.attach_port != 0)
        return 0; /* not ours to stop */
    if (kill(s->pid, SIGTERM) == -1) {
        perror("bench: kill");
        return -1;
    }
    while ((r = waitpid(s->pid, &status, WNOHANG)) == 0 && now_ns() < end)
        pause_ns(NS / 100);
    if (r == 0) {
        fprintf(stderr, "bench: %s: still running 5 s after SIGTERM\n",
                cfg.name);
        (void)kill(s->pid, SIGKILL);
        (void)waitpid(s->pid, &status, 0);
        return -1;
    }
    if (close(s->out) == -1)
        perror("bench: close");
    if (r == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench: %s: did not exit with status 0 on SIGTERM\n",
                cfg.name);
        return -1;
    }
    return 0;
}

/* The number that follows prefix at the start of a line of /proc/PID/file
 * (prefix "": the first line's first number), or -1 if there is none. */
static long long proc_number(pid_t pid, const char *file, const char *prefix)
{
    char path[64], text[256];
    size_t skip = strlen(prefix);
    long long v = -1;
    FILE *f;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, file);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(text, sizeof text, f) != NULL) {
        char *tail;
        if (strncmp(text, prefix, skip) != 0)
            continue;
        errno = 0;
        v = strtoll(text + skip, &tail, 10);
        if (errno != 0 || tail == text + skip)
            v = -1;
        break; /* the first line that matches */
    }
    if (fclose(f) == EOF)
        return -1;
    return v;
}

/* The server's CPU time so far in ns: the first field of schedstat. */
static long long cpu_ns(pid_t pid)
{
    return proc_number(pid, "schedstat", "");
}

/* The server's resident memory in KiB. */
static long long rss_kib(pid_t pid)
{
    return proc_number(pid, "status", "VmRSS:");
}

/* ---- the clients --------------------------------------------------------- */

/* A check failed on client c: says where (printf-style), and ends c. */
static void broken(struct client *c, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void broken(struct client *c, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "bench: %s: %s: client %u: ", cfg.name, case_label,
            (unsigned)c->key);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    failed = true;
    c->done = true;
}

static int open_socket(const struct server *s, struct client *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)s->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int flags;

    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd == -1)
        return -1;
    flags = fcntl(c->fd, F_GETFL);
    if (flags == -1 || fcntl(c->fd, F_SETFL, flags | O_NONBLOCK) == -1)
        return -1;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == -1 &&
        errno != EINPROGRESS)
        return -1;
    return 0;
}

/* Reads what has come back for c and checks it against its stream. */
static void take_echo(struct client *c)
{
    static unsigned char got[IO_CHUNK], want[IO_CHUNK];
    ssize_t n = read(c->fd, got, sizeof got);

    if (n == -1) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            broken(c, "read: %s, at byte %llu of %llu sent", strerror(errno),
                   (unsigned long long)c->got, (unsigned long long)c->sent);
        return;
    }
    if (n == 0) {
        if (c->got < c->sent)
            broken(c,
                   "end of stream with bytes %llu..%llu missing (%llu sent, "
                   "%llu came back)",
                   (unsigned long long)c->got, (unsigned long long)c->sent - 1,
                   (unsigned long long)c->sent, (unsigned long long)c->got);
        else if (!c->shut)
            broken(c,
                   "the server closed the connection at byte %llu, "
                   "before the client was done",
                   (unsigned long long)c->got);
        c->done = true;
        return;
    }
    if (c->got + (uint64_t)n > c->sent) {
        broken(c, "%llu bytes more than it sent, from byte %llu",
               (unsigned long long)(c->got + (uint64_t)n - c->sent),
               (unsigned long long)c->sent);
        return;
    }
    pattern(c->key, c->got, want, (size_t)n);
    if (memcmp(got, want, (size_t)n) != 0) {
        size_t i = 0;
        while (got[i] == want[i])
            i++;
        broken(c, "byte %llu of its stream: expected 0x%02x, got 0x%02x",
               (unsigned long long)c->got + i, (unsigned)want[i],
               (unsigned)got[i]);
        return;
    }
    c->got += (uint64_t)n;
}

/* Writes the next part of c's stream, up to its target. */
static void give(struct client *c)
{
    static unsigned char buf[IO_CHUNK];
    size_t n = c->target - c->sent > IO_CHUNK ? IO_CHUNK
                                              : (size_t)(c->target - c->sent);
    ssize_t w;

    pattern(c->key, c->sent, buf, n);
    w = write(c->fd, buf, n);
    if (w > 0)
        c->sent += (uint64_t)w;
    else if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK &&
             errno != EINTR)
        broken(c, "write: %s, at byte %llu", strerror(errno),
               (unsigned long long)c->sent);
}

/* Opens n connections, OPENING at a time; with greet, each sends
 * GREET_BYTES and must get them back before it counts as open (so the
 * server has accepted it). Returns 0, or -1 after saying why. */
static int open_all(const struct server *s, struct client *cl, size_t n,
                    bool greet)
{
    struct pollfd pfds[OPENING];
    size_t busy[OPENING], nbusy = 0, next = 0, ready = 0;
    long long end = now_ns() + cfg.connect_ns;

    while (ready < n) {
        size_t keep = 0;
        while (nbusy < OPENING && next < n) {
            struct client *c = &cl[next];
            if (open_socket(s, c) == -1) {
                fprintf(stderr,
                        "bench: %s: %s: client %zu: socket or "
                        "connect: %s\n",
                        cfg.name, case_label, next, strerror(errno));
                return -1;
            }
            c->target = greet ? GREET_BYTES : 0;
            busy[nbusy++] = next++;
        }
        for (size_t i = 0; i < nbusy; i++) {
            const struct client *c = &cl[busy[i]];
            pfds[i] = (struct pollfd){
                .fd = c->fd,
                .events =
                    c->sent < c->target || c->target == 0 ? POLLOUT : POLLIN};
        }
        if (now_ns() > end) {
            fprintf(stderr,
                    "bench: %s: %s: only %zu of %zu connections "
                    "open after %lld s\n",
                    cfg.name, case_label, ready, n, cfg.connect_ns / NS);
            return -1;
        }
        if (poll(pfds, (nfds_t)nbusy, 100) == -1 && errno != EINTR) {
            perror("bench: poll");
            return -1;
        }
        for (size_t i = 0; i < nbusy; i++) {
            struct client *c = &cl[busy[i]];
            int err = 0;
            socklen_t len = sizeof err;
            if (pfds[i].revents == 0) {
                busy[keep++] = busy[i];
                continue;
            }
            if (c->sent == 0 &&
                (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 ||
                 err != 0)) {
                fprintf(stderr, "bench: %s: %s: client %zu: connect: %s\n",
                        cfg.name, case_label, busy[i], strerror(err));
                return -1;
            }
            if (c->sent < c->target)
                give(c);
            else if (c->target > 0)
                take_echo(c);
            if (failed)
                return -1;
            if (c->got == c->target)
                ready++;
            else
                busy[keep++] = busy[i];
        }
        nbusy = keep;
    }
    return 0;
}

static void close_all(struct client *cl, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (cl[i].fd != -1) {
            if (close(cl[i].fd) == -1)
                perror("bench: close");
            cl[i].fd = -1;
        }
}

/* Sets what c sends next: a new message (ping-pong, msg > 0) once the last
 * came back, or more stream (msg == 0) while the window is open; once it is
 * closed, shuts down the sending side after the last byte. */
static void plan(struct client *c, size_t msg, bool open, long long now)
{
    if (open && msg > 0 && c->got == c->target) {
        c->target += msg;
        c->began = now;
    } else if (open && msg == 0) {
        c->target = c->got + STREAM_AHEAD;
    } else if (!open && msg == 0) {
        c->target = c->sent; /* a stream simply stops */
    }
    if (!open && !c->shut && c->sent == c->target) {
        if (shutdown(c->fd, SHUT_WR) == -1)
            broken(c, "shutdown: %s, at byte %llu", strerror(errno),
                   (unsigned long long)c->sent);
        c->shut = true;
    }
}

/* After a read: a ping-pong message that is all back within the window
 * counts as a round trip, with its latency. */
static void count(struct client *c, size_t msg, long long now,
                  long long window_end, uint64_t *ops)
{
    if (msg > 0 && c->began > 0 && c->got == c->target && now <= window_end) {
        long long lat = now - c->began;
        if (nsamples < MAX_SAMPLES)
            samples[nsamples++] = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
        (*ops)++;
        c->began = 0;
        c->served = true;
    }
}

static int by_value(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

/* Fills pfds with the clients of set[0..n) not done yet, after planning
 * what each sends next; who[k] is the index in set of pfds[k]. Returns how
 * many. */
static size_t watch(struct client **set, size_t n, size_t msg, bool open,
                    long long now, struct pollfd *pfds, size_t *who)
{
    size_t k = 0;

    for (size_t i = 0; i < n && !failed; i++) {
        struct client *c = set[i];
        short out;
        if (c->done)
            continue;
        plan(c, msg, open, now);
        out = c->sent < c->target ? POLLOUT : 0;
        pfds[k] = (struct pollfd){.fd = c->fd, .events = POLLIN | out};
        who[k++] = i;
    }
    return k;
}

/* The figures of a timed run from what drive() counted: amount of work
 * (round trips, or MiB), server CPU ns (< 0: unknown), window ns. */
static void figures(struct result *r, size_t msg, double amount, double cpu,
                    double window)
{
    r->rate = amount / (window / (double)NS);
    r->unit = msg > 0 ? "rt/s" : "MiB/s";
    r->cpu_pct = cpu < 0 ? -1 : 100.0 * cpu / window;
    r->cpu_us_per_op = cpu < 0 || amount <= 0 ? -1 : cpu / 1000.0 / amount;
    r->p50_us = r->p99_us = -1;
    if (nsamples > 0) {
        size_t mid = (nsamples - 1) / 2, high = (nsamples - 1) * 99 / 100;
        qsort(samples, nsamples, sizeof *samples, by_value);
        r->p50_us = (double)samples[mid] / 1000.0;
        r->p99_us = (double)samples[high] / 1000.0;
    }
}

/*
 * One timed run over the clients in set[0..n): ping-pong with msg-byte
 * messages (msg > 0), or streaming (msg == 0), for the window; then every
 * client finishes, shuts down and must get all of it back. Fills r's rate,
 * latency and CPU figures. Returns 0, or -1 (failed is set).
 */
static int drive(const struct server *s, struct client **set, size_t n,
                 size_t msg, struct result *r)
{
    struct pollfd *pfds = calloc(n, sizeof *pfds);
    size_t *who = calloc(n, sizeof *who);
    long long start = now_ns(), cpu0 = cpu_ns(s->pid), cpu1 = -1;
    long long window_end = start + cfg.window_ns, end = -1, drain_end;
    uint64_t ops = 0, bytes = 0;

    if (pfds == NULL || who == NULL) {
        perror("bench: calloc");
        exit(1);
    }
    nsamples = 0;
    drain_end = window_end + cfg.drain_ns;
    for (;;) {
        long long now = now_ns(), wait_ns;
        bool open = now < window_end;
        size_t k;
        if (!open && end < 0) {
            cpu1 = cpu_ns(s->pid);
            end = now;
        }
        k = watch(set, n, msg, open, now, pfds, who);
        if (k == 0 || failed)
            break;
        if (now > drain_end) {
            for (size_t i = 0; i < k; i++) {
                struct client *c = set[who[i]];
                if (c->got < c->sent)
                    broken(c, "bytes %llu..%llu never came back (%llu sent)",
                           (unsigned long long)c->got,
                           (unsigned long long)c->sent - 1,
                           (unsigned long long)c->sent);
                else
                    broken(c,
                           "all %llu bytes came back, then no end of "
                           "stream",
                           (unsigned long long)c->sent);
            }
            break;
        }
        wait_ns = (open ? window_end : drain_end) - now;
        if (poll(pfds, (nfds_t)k, (int)(wait_ns / 1000000) + 1) == -1 &&
            errno != EINTR) {
            perror("bench: poll");
            exit(1);
        }
        now = now_ns();
        for (size_t i = 0; i < k; i++) {
            struct client *c = set[who[i]];
            uint64_t before = c->got;
            if (pfds[i].revents & POLLOUT)
                give(c);
            if (!c->done && (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                take_echo(c);
            if (now <= window_end && msg == 0 && c->got > before) {
                bytes += c->got - before;
                c->served = true;
            }
            count(c, msg, now, window_end, &ops);
        }
    }
    free(pfds);
    free(who);
    if (failed)
        return -1;
    if (end < 0)
        end = now_ns();
    figures(r, msg, msg > 0 ? (double)ops : (double)bytes / 1048576.0,
            cpu0 >= 0 && cpu1 >= 0 ? (double)(cpu1 - cpu0) : -1,
            (double)(end - start));
    r->served = 0;
    for (size_t i = 0; i < n; i++)
        if (set[i]->served)
            r->served++;
    return 0;
}

/* ---- the cases ----------------------------------------------------------- */

static void put_number(double v, int decimals)
{
    if (v >= 0)
        printf(",%.*f", decimals, v);
    else
        fputs(",", stdout);
}

static void emit(const struct result *r)
{
    printf("%s,%s,%zu,%zu,%zu", cfg.name, r->name, r->conns, r->busy, r->bytes);
    put_number(r->rate, 1);
    printf(",%s", r->unit);
    put_number(r->p50_us, 1);
    put_number(r->p99_us, 1);
    put_number(r->cpu_us_per_op, 2);
    put_number(r->cpu_pct, 3);
    printf(",%zu", r->served);
    put_number(r->mem_per_conn, 0);
    printf(",%s\n", r->note);
    if (fflush(stdout) == EOF) {
        perror("bench: stdout");
        exit(1);
    }
}

static struct result blank(const char *name, size_t conns, size_t busy,
                           size_t bytes)
{
    struct result r = {.name = name,
                       .conns = conns,
                       .busy = busy,
                       .bytes = bytes,
                       .rate = -1,
                       .unit = "",
                       .p50_us = -1,
                       .p99_us = -1,
                       .cpu_us_per_op = -1,
                       .cpu_pct = -1,
                       .mem_per_conn = -1,
                       .note = ""};
    return r;
}

static struct client *new_clients(size_t n, uint32_t first_key)
{
    struct client *cl = calloc(n, sizeof *cl);

    if (cl == NULL) {
        perror("bench: calloc");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        cl[i].fd = -1;
        cl[i].key = first_key + (uint32_t)i;
    }
    return cl;
}

/* The server's CPU share over a quiet window. */
static void case_idle(const struct server *s)
{
    struct result r = blank("idle", 0, 0, 0);
    const char *why;
    long long c0, c1, t0, t1;

    if (na("idle", &why)) {
        r.note = why;
        emit(&r);
        return;
    }
    case_label = "idle";
    pause_ns(NS / 10);
    c0 = cpu_ns(s->pid);
    t0 = now_ns();
    pause_ns(cfg.window_ns);
    c1 = cpu_ns(s->pid);
    t1 = now_ns();
    if (c0 >= 0 && c1 >= 0)
        r.cpu_pct = 100.0 * (double)(c1 - c0) / (double)(t1 - t0);
    emit(&r);
}

/* Ping-pong (msg > 0) or streaming (msg == 0) with n clients. */
static int case_timed(const struct server *s, const char *name, size_t n,
                      size_t msg)
{
    static uint32_t keys = 1;
    static char label[64]; /* case_label points here */
    struct result r = blank(name, n, n, msg > 0 ? msg : STREAM_AHEAD);
    struct client *cl, **set;
    const char *why;
    int rc;

    if (na(name, &why)) {
        r.note = why;
        emit(&r);
        return 0;
    }
    snprintf(label, sizeof label, "%s %zu", name, n);
    case_label = label;
    fprintf(stderr, "bench: %s: %s\n", cfg.name, label);
    cl = new_clients(n, keys);
    keys += (uint32_t)n;
    set = calloc(n, sizeof(struct client *));
    if (set == NULL) {
        perror("bench: calloc");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        set[i] = &cl[i];
    rc = open_all(s, cl, n, false);
    if (rc == 0)
        rc = drive(s, set, n, msg, &r);
    close_all(cl, n);
    free(set);
    free(cl);
    if (rc == 0)
        emit(&r);
    return rc;
}

/* n connections held, HOLD_BUSY of them busy, on a fresh server. */
static int case_hold(size_t n)
{
    struct result idle = blank("hold-idle", n, 0, GREET_BYTES);
    struct result busy = blank("hold-busy", n, HOLD_BUSY, MSG_BYTES);
    struct client *cl;
    struct server s;
    long long m0;
    const char *why;
    int rc;

    if (na("hold", &why)) {
        idle.note = busy.note = why;
        emit(&idle);
        emit(&busy);
        return 0;
    }
    case_label = "hold";
    fprintf(stderr, "bench: %s: hold %zu (%d busy)\n", cfg.name, n, HOLD_BUSY);
    start_server(&s);
    cl = new_clients(n, 0x40000000U);
    pause_ns(NS / 10);
    m0 = rss_kib(s.pid);
    rc = open_all(&s, cl, n, true);
    if (rc == 0) {
        struct client *set[HOLD_BUSY];
        long long m1, c0, c1, t0, t1;
        pause_ns(NS / 5);
        m1 = rss_kib(s.pid);
        if (m0 >= 0 && m1 >= 0)
            idle.mem_per_conn = (double)(m1 - m0) * 1024.0 / (double)n;
        c0 = cpu_ns(s.pid);
        t0 = now_ns();
        pause_ns(cfg.window_ns);
        c1 = cpu_ns(s.pid);
        t1 = now_ns();
        if (c0 >= 0 && c1 >= 0)
            idle.cpu_pct = 100.0 * (double)(c1 - c0) / (double)(t1 - t0);
        idle.served = n;
        emit(&idle);
        for (size_t i = 0; i < HOLD_BUSY; i++)
            set[i] = &cl[i * (n / HOLD_BUSY)];
        case_label = "hold-busy";
        rc = drive(&s, set, HOLD_BUSY, MSG_BYTES, &busy);
        if (rc == 0)
            emit(&busy);
    }
    close_all(cl, n);
    free(cl);
    if (stop_server(&s) == -1)
        rc = -1;
    return rc;
}

/* Raises the soft descriptor limit to what n connections need, as far as
 * the hard limit allows. Returns the limit in force. */
static rlim_t raise_limit(rlim_t want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        perror("bench: getrlimit");
        exit(1);
    }
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want
                          ? want
                          : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
            perror("bench: setrlimit");
            exit(1);
        }
    }
    return rl.rlim_cur;
}

static void usage(void)
{
    fputs("usage: bench [-Q] [-H] [-n NAME] [-w MS] [-x CASE=REASON]... "
          "{-- PROGRAM [ARGS...] | -P PORT [-i PID]}\n",
          stderr);
    exit(2);
}

/* A whole number in [min, max] from text, or usage(). */
static long long number(const char *text, long long min, long long max)
{
    char *tail;
    long long v;

    errno = 0;
    v = strtoll(text, &tail, 10);
    if (errno != 0 || tail == text || *tail != '\0' || v < min || v > max)
        usage();
    return v;
}

/* Parses the options; builds the server's command line. */
static void configure(int argc, char **argv)
{
    static char *ours[] = {"-q", "-a", "127.0.0.1", "-p", "0"};
    const size_t nours = sizeof ours / sizeof ours[0];
    long long window_ms = -1;
    int opt, first;

    while ((opt = getopt(argc, argv, "QHn:w:x:P:i:")) != -1) {
        char *eq;
        switch (opt) {
        case 'Q':
            cfg.quick = true;
            break;
        case 'H':
            puts("server,case,conns,busy,bytes,rate,unit,p50_us,p99_us,"
                 "cpu_us_per_op,cpu_pct,served,mem_b_per_conn,note");
            break;
        case 'n':
            cfg.name = optarg;
            break;
        case 'w':
            window_ms = number(optarg, 10, 60000);
            break;
        case 'P':
            cfg.attach_port = (unsigned)number(optarg, 1, 65535);
            break;
        case 'i':
            cfg.attach_pid = (pid_t)number(optarg, 1, INT32_MAX);
            break;
        case 'x':
            eq = strchr(optarg, '=');
            if (eq == NULL || cfg.na_count == MAX_NA)
                usage();
            *eq = '\0';
            cfg.na_case[cfg.na_count] = optarg;
            cfg.na_why[cfg.na_count++] = eq + 1;
            break;
        default:
            usage();
        }
    }
    if (window_ms < 0)
        window_ms = cfg.quick ? 250 : 2000;
    cfg.window_ns = window_ms * 1000000;
    cfg.connect_ns = (cfg.quick ? 5 : 20) * NS;
    cfg.drain_ns = (cfg.quick ? 3 : 10) * NS;
    if (cfg.attach_port != 0) {
        if (optind != argc)
            usage();
        if (cfg.name == NULL)
            cfg.name = "server";
        return;
    }
    if (optind >= argc)
        usage();
    first = optind;
    cfg.argv = calloc((size_t)(argc - first) + nours + 1, sizeof *cfg.argv);
    if (cfg.argv == NULL) {
        perror("bench: calloc");
        exit(1);
    }
    /* Ours go last: a wrapper such as taskset takes PROGRAM ARGS as they
     * are, and the last -p wins in the server's getopt(). */
    memcpy(cfg.argv, argv + first, (size_t)(argc - first) * sizeof *argv);
    memcpy(cfg.argv + (argc - first), ours, sizeof ours);
    if (cfg.name == NULL) {
        const char *slash = strrchr(argv[first], '/');
        cfg.name = slash != NULL ? slash + 1 : argv[first];
    }
}

int main(int argc, char **argv)
{
    static const size_t full_pp[] = {1, 10, 100, 1000, 0};
    static const size_t quick_pp[] = {1, 10, 100, 0};
    static const size_t full_st[] = {1, 100, 0};
    static const size_t quick_st[] = {1, 10, 0};
    struct sigaction sa = {.sa_handler = SIG_IGN};
    const size_t *pp, *st;
    size_t hold;
    struct server s;
    int rc = 0;

    configure(argc, argv);
    pp = cfg.quick ? quick_pp : full_pp;
    st = cfg.quick ? quick_st : full_st;
    hold = cfg.quick ? 200 : 10000;
    if (sigemptyset(&sa.sa_mask) == -1 || sigaction(SIGPIPE, &sa, NULL) == -1) {
        perror("bench: sigaction SIGPIPE");
        return 1;
    }
    if (raise_limit((rlim_t)hold + 256) < (rlim_t)hold + 64) {
        fprintf(stderr,
                "bench: the descriptor limit is too low for %zu "
                "connections (ulimit -Hn)\n",
                hold);
        return 1;
    }
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    if (samples == NULL) {
        perror("bench: malloc");
        return 1;
    }
    start_server(&s);
    case_idle(&s);
    for (size_t i = 0; pp[i] != 0 && rc == 0; i++)
        rc = case_timed(&s, "pingpong", pp[i], MSG_BYTES);
    for (size_t i = 0; st[i] != 0 && rc == 0; i++)
        rc = case_timed(&s, "stream", st[i], 0);
    if (stop_server(&s) == -1)
        rc = -1;
    if (rc == 0)
        rc = case_hold(hold);
    free(samples);
    free(cfg.argv);
    return rc == 0 && !failed ? 0 : 1;
}
