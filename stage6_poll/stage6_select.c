/*
 * stage6_select - lesson 6, the older way: the same server on select().
 *
 * The same server as stage6_poll, line for line where the two APIs allow:
 * `diff -u stage6_poll/stage6_poll.c stage6_poll/stage6_select.c` is the
 * lesson. select() takes three bit sets (fd_set: read, write, exceptional)
 * instead of an array of struct pollfd, and the highest descriptor plus one.
 * It changes the sets in place, so they are rebuilt every round (poll()
 * keeps events and writes revents). Its timeout is a struct timeval, which
 * Linux updates to the time left. And an fd_set is a fixed array of
 * FD_SETSIZE bits (1024 on Linux): FD_SET on a descriptor at or above it
 * writes past the end of the set, corrupting memory silently. So this
 * server never puts such a descriptor in a set: a client that gets one is
 * closed at once, and the narration says why. poll() has no such limit,
 * and both cost time in proportion to the descriptors watched, every round
 * (epoll and kqueue do not: F40).
 *
 * Run it:    bin/stage6_select
 * Watch it:  `strace -e trace=select,pselect6 -p PID` (glibc's select()
 *            is the pselect6 system call): the sets and the highest
 *            descriptor + 1, every round. Open more than a thousand clients
 *            (make tools, then build/tools/load -c 1100 -w 127.0.0.1 6969
 *            echo): the one on fd 1024 is refused, by name. `top -p PID`:
 *            0% CPU while idle.
 * Read:      man 2 select, man 2 select_tut (its BUGS), man 2 poll
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The most a client may be owed: at this many bytes unsent, the server stops
 * reading from it until it takes some (backpressure, F36). */
#define OUT_CAP 65536
/* The one buffer every read() goes into, shared by all clients. */
#define READ_SIZE 65536
/* Descriptors the server holds for itself: stdin, stdout, stderr, the
 * listener, the two ends of the self-pipe and the reserve. */
#define OWN_FDS           7
#define MAX_CLIENTS_LIMIT 1000000
/* The ceiling for the descriptor limit: the hard limit may be "unlimited",
 * which some systems refuse as a soft limit (Linux caps it at nr_open). */
#define NOFILE_CAP 1048576
/* Out of descriptors with no reserve left: how long the listener rests. */
#define PAUSE_MS    1000
#define NO_DEADLINE LLONG_MAX

/*
 * One connected client. It costs little while idle: this struct, one
 * pointer and one pollfd. Output is kept only when a write was short: out is
 * NULL while nothing is owed; otherwise it holds OUT_CAP bytes and
 * out[start..end) is what the client is owed, oldest first. It is freed as
 * soon as it drains.
 */
struct client {
    int fd;
    bool eof;           /* the client shut down its sending side: no more
                           reading; close once nothing is owed */
    const char *ending; /* why it is to be closed after this round (for the
                           narration); NULL while it is being served */
    char *out;          /* NULL, or OUT_CAP bytes: see above */
    size_t start, end;  /* out[start..end) is owed; both 0 while out is NULL */
    long long echoed;   /* bytes written back, for the narration */
    long long last_active;    /* ms (CLOCK_MONOTONIC) it last moved data, -t */
    char peer[ADDR_TEXT_MAX]; /* "127.0.0.1:54012", for the narration */
};

/* What a client wants next, from its state alone (STYLE 5): the watch list
 * is rebuilt from these each round. A client that wants to close has its
 * ending set instead, and is closed after the round. */
enum { WANT_READ = 1, WANT_WRITE = 2 };

/* What the kernel said about a client's descriptor, in the same words for
 * select() and poll(). */
enum { CAN_READ = 1, CAN_WRITE = 2, HUNG_UP = 4 };

/* The stage's own options. */
struct settings {
    unsigned long maxclients; /* -m; 0: from the descriptor limit */
    unsigned long idle;       /* -t, seconds; 0: no idle timeout */
    bool keepalive;           /* -k given */
    unsigned long ka_idle, ka_intvl, ka_cnt;
    bool linger0; /* -L */
};

/* Everything the loop works on. */
struct server {
    int listener;
    int wake;    /* the self-pipe's read end: readable after a signal */
    int reserve; /* /dev/null, held for the EMFILE cure; -1 if lost */
    struct client **clients; /* clients[0..count) */
    size_t count, max;
    long long idle_ms;      /* -t in ms; 0: off */
    long long paused_until; /* the listener is not watched before then */
    const struct settings *set;
    char *inbuf; /* READ_SIZE bytes: every read() lands here first */
};

static const struct stage_option own_options[] = {
    {'m', "MAXCLIENTS",
     "clients served at once; one more is closed at once "
     "(default: FD_SETSIZE or the descriptor limit, whichever is lower, "
     "minus the 7 the server holds)"},
    {'t', "SECONDS",
     "close a client that has moved no data for this long "
     "(default: never)"},
    {'k', "IDL,INT,CNT",
     "TCP keepalive: probe after IDL s of silence, then every INT s; "
     "give up after CNT probes"},
    {'L', NULL,
     "close clients with SO_LINGER {on, 0}: RST instead of FIN, no "
     "TIME_WAIT (for the lesson)"},
    {0, NULL, NULL},
};

/* Reads -k's "IDL,INT,CNT", three whole numbers, into s; returns 0 or -1. */
static int parse_keepalive(const char *arg, struct settings *s)
{
    char text[64], *intvl, *cnt;

    if (strlen(arg) >= sizeof text)
        return -1;
    memcpy(text, arg, strlen(arg) + 1);
    intvl = strchr(text, ',');
    if (intvl == NULL)
        return -1;
    *intvl++ = '\0';
    cnt = strchr(intvl, ',');
    if (cnt == NULL)
        return -1;
    *cnt++ = '\0';
    /* Linux's own bounds: 32767 s for the times, 127 probes. */
    if (parse_number(text, 1, 32767, &s->ka_idle) == -1 ||
        parse_number(intvl, 1, 32767, &s->ka_intvl) == -1 ||
        parse_number(cnt, 1, 127, &s->ka_cnt) == -1)
        return -1;
    return 0;
}

static const char *set_option(char letter, const char *arg, void *ctx)
{
    struct settings *s = ctx;

    switch (letter) {
    case 'm':
        if (parse_number(arg, 1, MAX_CLIENTS_LIMIT, &s->maxclients) == -1)
            return "a whole number from 1 to 1000000";
        break;
    case 't':
        if (parse_number(arg, 1, 1000000, &s->idle) == -1)
            return "a whole number of seconds from 1 to 1000000";
        break;
    case 'k':
        if (parse_keepalive(arg, s) == -1)
            return "three whole numbers IDL,INT,CNT: seconds (1 to "
                   "32767), seconds (1 to 32767), probes (1 to 127)";
        s->keepalive = true;
        break;
    case 'L':
        s->linger0 = true;
        break;
    default: /* getopt hands on only own_options' letters: no test comes here */
        break;
    }
    return NULL;
}

/* Sets O_NONBLOCK on fd, keeping its other status flags: read them with
 * F_GETFL, add the bit, write them back with F_SETFL. Returns 0 or -1. */
static int set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags == -1)
        return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static bool would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK;
}

/* True for accept() errors that concern only the connection being accepted
 * (it was reset or failed before we took it): the server goes on. Linux also
 * passes pending network errors of the new connection through accept(). */
static bool accept_error_is_transient(int err)
{
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM: /* a firewall rule refused it (Linux) */
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENOPROTOOPT:
    case EOPNOTSUPP:
#ifdef EHOSTDOWN
    case EHOSTDOWN:
#endif
        return true;
    default:
        return false;
    }
}

/* True for accept() errors that mean "out of a resource for now": the
 * connection stays queued, so retrying at once would spin. */
static bool accept_error_is_exhaustion(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* ---- signals: the self-pipe ---------------------------------------------- */

/*
 * The write end of the self-pipe, or -1 until the loop is ready. A handler
 * may only touch lock-free atomics (C11 7.14.1.1), hence the atomic int.
 */
static atomic_int wake_fd = -1;

/*
 * SIGINT and SIGTERM. Setting a flag and testing it before poll() has a
 * race: a signal that lands after the test and before poll() is only seen
 * when something else wakes the loop, maybe never. Instead the handler
 * writes the signal's number into a pipe whose read end poll() watches: a
 * signal at any moment leaves a byte there, and poll() returns at once.
 * write() is async-signal-safe; the handler keeps errno as it found it, since
 * it may interrupt code that is about to read errno. It is installed only
 * once the pipe exists; before that, exit_on_signals() ends the program at
 * once, as in stages 1 to 5, since there is nothing to shut down gracefully.
 */
static void on_signal(int sig)
{
    int saved = errno;
    int fd = atomic_load(&wake_fd);
    unsigned char byte = (unsigned char)sig;

    /* A full pipe (EAGAIN) already holds a byte, which is all it takes. */
    (void)!write(fd, &byte, 1);
    errno = saved;
}

/* Installs on_signal for SIGINT and SIGTERM. No SA_RESTART: poll() is never
 * restarted anyway (it fails with EINTR), and a Ctrl-C in step mode should
 * interrupt the pause. */
static void catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) == -1)
        die("sigaction SIGINT");
    if (sigaction(SIGTERM, &sa, NULL) == -1)
        die("sigaction SIGTERM");
}

/* Creates the self-pipe, hands its write end to the handler, and returns its
 * read end. Both ends non-blocking: the handler must never sleep on a full
 * pipe, and the loop must never sleep emptying it. */
static int open_self_pipe(void)
{
    int fds[2];

    if (pipe(fds) == -1)
        die("pipe");
    if (set_nonblocking(fds[0]) == -1 || set_nonblocking(fds[1]) == -1)
        die("fcntl O_NONBLOCK on the self-pipe");
    atomic_store(&wake_fd, fds[1]);
    return fds[0];
}

/* After poll() saw the self-pipe readable: empties it and returns the last
 * signal number the handler wrote, or 0 if there was nothing after all. */
static int take_signal(int fd)
{
    unsigned char bytes[16];
    ssize_t n = read(fd, bytes, sizeof bytes);

    if (n > 0)
        return bytes[n - 1];
    if (n == -1 && !would_block(errno) && errno != EINTR)
        die("read from the self-pipe");
    return 0;
}

/* ---- setup --------------------------------------------------------------- */

/*
 * Every client is a descriptor, and the soft limit on descriptors (often
 * 1024) would stop the server long before memory does. A process may raise
 * its own soft limit up to the hard limit: do so (up to NOFILE_CAP). Returns
 * the limit now in force.
 */
static unsigned long long raise_nofile_limit(void)
{
    struct rlimit rl;
    rlim_t want;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        die("getrlimit RLIMIT_NOFILE");
    want = rl.rlim_max;
    /* The hard limit is above NOFILE_CAP only where fs.nr_open was raised
     * (here and below): not on a test machine, so no test reaches that. */
    if (want == RLIM_INFINITY || want > NOFILE_CAP)
        want = NOFILE_CAP;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
            warn_errno(errno, "setrlimit RLIMIT_NOFILE to %llu (keeping %llu)",
                       (unsigned long long)want, (unsigned long long)was);
            return was;
        }
        narrate("descriptor limit raised from %llu to %llu (RLIMIT_NOFILE: "
                "the soft limit, up to the hard limit; see ulimit -n)",
                (unsigned long long)was, (unsigned long long)want);
        return want;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > NOFILE_CAP)
        rl.rlim_cur = NOFILE_CAP;
    narrate("descriptor limit: %llu (RLIMIT_NOFILE, already as high as it "
            "goes; see ulimit -n)",
            (unsigned long long)rl.rlim_cur);
    return rl.rlim_cur;
}

/* How many clients to serve at once: -m, or as many as the descriptor limit
 * and FD_SETSIZE leave room for. */
static size_t choose_maxclients(const struct settings *s,
                                unsigned long long nofile)
{
    unsigned long long room;

    if (nofile > FD_SETSIZE)
        nofile = FD_SETSIZE; /* select() cannot watch more */
    room = nofile > OWN_FDS ? nofile - OWN_FDS : 1;

    if (s->maxclients == 0)
        return room > MAX_CLIENTS_LIMIT ? MAX_CLIENTS_LIMIT : (size_t)room;
    if (s->maxclients > room)
        narrate("-m %lu is more than select() can watch here (%llu): a "
                "client beyond that is closed at once, as FD_SETSIZE demands",
                s->maxclients, room);
    return s->maxclients;
}

/* -k: says what keepalive will do, and which knobs this system lacks. */
static void describe_keepalive(const struct settings *s)
{
    if (!s->keepalive) {
        narrate("keepalive off (-k turns it on): a peer that vanishes "
                "without a word stays connected until we write to it");
        return;
    }
    narrate("keepalive on (-k): after %lu s of silence the kernel probes "
            "every %lu s and gives up after %lu probes (read() then fails "
            "with ETIMEDOUT)",
            s->ka_idle, s->ka_intvl, s->ka_cnt);
#ifndef TCP_KEEPIDLE
    narrate("this system has no TCP_KEEPIDLE: the system-wide idle time "
            "applies instead");
#endif
#ifndef TCP_KEEPINTVL
    narrate("this system has no TCP_KEEPINTVL: the system-wide interval "
            "applies instead");
#endif
#ifndef TCP_KEEPCNT
    narrate("this system has no TCP_KEEPCNT: the system-wide probe count "
            "applies instead");
#endif
}

/* -k: turns on TCP keepalive for fd with its knobs, where the system has
 * them (they are not POSIX). Returns 0 or -1. */
static int set_keepalive(int fd, const struct settings *s)
{
    int on = 1;

    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) == -1)
        return -1;
#ifdef TCP_KEEPIDLE
    {
        int idle = (int)s->ka_idle;
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) == -1)
            return -1;
    }
#endif
#ifdef TCP_KEEPINTVL
    {
        int intvl = (int)s->ka_intvl;
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) ==
            -1)
            return -1;
    }
#endif
#ifdef TCP_KEEPCNT
    {
        int cnt = (int)s->ka_cnt;
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) == -1)
            return -1;
    }
#endif
    (void)s;
    return 0;
}

/* Milliseconds on CLOCK_MONOTONIC, which does not jump when someone sets the
 * date: deadlines measured on it stay right. */
static long long now_ms(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
        die("clock_gettime CLOCK_MONOTONIC");
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- one client ---------------------------------------------------------- */

/* The bytes c is owed and has not taken yet. */
static size_t owed(const struct client *c)
{
    return c->end - c->start;
}

/* What c wants next: WANT_READ, WANT_WRITE, both, or (never for a client
 * still being served) neither. */
static int wants(const struct client *c)
{
    int w = 0;

    /* Read unless the client has ended its side, or is owed so much that
     * reading more would only pile up memory (backpressure). */
    if (!c->eof && owed(c) < OUT_CAP)
        w |= WANT_READ;
    /* Ask to write only while something is owed: a socket with room in its
     * send buffer is writable almost always, and asking for POLLOUT with
     * nothing to send would wake the loop for nothing, over and over. */
    if (owed(c) > 0)
        w |= WANT_WRITE;
    return w;
}

/* An error on c's connection (ECONNRESET, EPIPE, ...): said, and c closes. */
static void fail(struct client *c, const char *call)
{
    warn_errno(errno, "%s %s on fd %d", call, c->peer, c->fd);
    c->ending = "ended by an error";
}

/* Keeps buf[0..n) for later, after what c is owed already. The caller reads
 * at most OUT_CAP - owed(c) bytes, so it always fits. Returns 0 or -1. */
static int keep(struct client *c, const char *buf, size_t n)
{
    if (c->out == NULL) {
        c->out = malloc(OUT_CAP);
        if (c->out == NULL)
            return -1;
        c->start = c->end = 0;
    }
    if (c->end + n > OUT_CAP) { /* slide what is owed to the front */
        memmove(c->out, c->out + c->start, owed(c));
        c->end -= c->start;
        c->start = 0;
    }
    memcpy(c->out + c->end, buf, n);
    c->end += n;
    return 0;
}

/* Writes what c is owed, as much as the kernel takes now. A short write is
 * normal: the rest waits for the next POLLOUT. Returns bytes written. */
static size_t send_owed(struct client *c)
{
    ssize_t n = write(c->fd, c->out + c->start, owed(c));

    if (n == -1) {
        if (!would_block(errno) && errno != EINTR)
            fail(c, "write to");
        return 0;
    }
    c->start += (size_t)n;
    c->echoed += n;
    if (c->start == c->end) { /* drained: an idle client keeps no buffer */
        free(c->out);
        c->out = NULL;
        c->start = c->end = 0;
    }
    return (size_t)n;
}

/* Echoes buf[0..n), just read from c: written at once if nothing older is
 * owed (order matters), and whatever the kernel does not take is kept. */
static void echo(struct client *c, const char *buf, size_t n)
{
    size_t sent = 0;

    if (owed(c) == 0) {
        ssize_t w = write(c->fd, buf, n);
        if (w == -1 && !would_block(errno) && errno != EINTR) {
            fail(c, "write to");
            return;
        }
        if (w > 0) {
            sent = (size_t)w;
            c->echoed += w;
        }
    }
    if (sent < n && keep(c, buf + sent, n - sent) == -1) {
        fail(c, "keeping output for");
        return;
    }
}

/* One read from c into the shared buffer, echoed at once. Returns the bytes
 * read (0 also at end of stream, which sets eof). */
static size_t read_and_echo(struct client *c, char *buf)
{
    size_t room = OUT_CAP - owed(c); /* so that what is kept fits */
    ssize_t n = read(c->fd, buf, room < READ_SIZE ? room : READ_SIZE);

    if (n > 0) {
        echo(c, buf, (size_t)n);
        return (size_t)n;
    }
    if (n == 0)
        c->eof = true; /* end of stream: no more reading; what is owed is
                          still sent, then the client closes */
    else if (!would_block(errno) && errno != EINTR)
        fail(c, "read from");
    return 0;
}

/*
 * One client's turn, given what the kernel said about it (ready: CAN_READ,
 * CAN_WRITE, HUNG_UP). Owed bytes go first, then one read, echoed at once:
 * one read per round keeps one fast client from starving the others. Never
 * waits. Sets c->ending when the client is to be closed.
 */
static void serve(struct client *c, int ready, char *buf, long long now)
{
    size_t moved = 0;

    if ((ready & CAN_WRITE) && owed(c) > 0)
        moved += send_owed(c);
    if (c->ending == NULL && (ready & CAN_READ) && (wants(c) & WANT_READ))
        moved += read_and_echo(c, buf);
    if (moved > 0)
        c->last_active = now;
    if (c->ending == NULL && c->eof && owed(c) == 0)
        c->ending = "left";
    /* Hung up (POLLHUP, POLLERR): the reads above returned what was left
     * and the writes delivered what they could; once neither moves a byte,
     * nothing more will happen on this connection. In practice read() or
     * write() has said so already (end of stream, an error), so no test
     * reaches this line: it keeps a client whose calls only ever say "not
     * now" from being watched forever. */
    if (c->ending == NULL && (ready & HUNG_UP) && moved == 0)
        c->ending = "hung up";
}

/* -t: a client that has moved no data for idle_ms is closed. */
static void expire(struct client *c, long long idle_ms, long long now)
{
    if (c->ending == NULL && idle_ms > 0 && now - c->last_active >= idle_ms)
        c->ending = "closed: idle too long (-t)";
}

/* Closes c's descriptor; with -L, by a reset (F28). */
static void close_client(struct client *c, bool linger0)
{
    if (linger0) {
        /* SO_LINGER {on, 0 s}: close() throws away anything unsent and
         * sends RST instead of FIN, so no TIME_WAIT on either side. Rarely
         * right: the peer sees ECONNRESET and may lose what it was sent. */
        struct linger lg = {1, 0};
        if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == -1)
            warn_errno(errno, "setsockopt SO_LINGER on fd %d", c->fd);
    }
    if (close(c->fd) == -1)
        warn_errno(errno, "close fd %d", c->fd);
}

static void free_client(struct client *c)
{
    free(c->out);
    free(c);
}

/* Closes and frees the clients whose ending is set, after the scan: removing
 * them while walking the array would skip the one moved into the hole. A
 * client leaving frees a descriptor, so the listener is watched again and a
 * lost reserve is taken back. */
static void close_finished(struct server *srv)
{
    size_t i = 0;

    while (i < srv->count) {
        struct client *c = srv->clients[i];
        if (c->ending == NULL) {
            i++;
            continue;
        }
        close_client(c, srv->set->linger0);
        narrate("client %s on fd %d %s: %lld bytes echoed (clients: %zu)",
                c->peer, c->fd, c->ending, c->echoed, srv->count - 1);
        free_client(c);
        srv->clients[i] = srv->clients[--srv->count]; /* the last one fills
                                                         the hole */
        srv->paused_until = 0;
        if (srv->reserve == -1)
            srv->reserve = open("/dev/null", O_RDONLY);
    }
}

/* ---- the listener -------------------------------------------------------- */

/*
 * Out of descriptors (EMFILE: this process; ENFILE: the whole system), the
 * connection stays in the queue and the listener stays readable: poll()
 * returns at once, forever, and the loop spins (F38). The cure: give back
 * the one descriptor held in reserve, take the connection with it, close it
 * at once (the client sees end of stream, not a hang), and take the reserve
 * back. Returns 1 if it refused a client, 0 if the queue was empty after
 * all (out of descriptors, accept() fails with EMFILE before it looks at
 * the queue), -1 with no reserve to give.
 */
static int refuse_with_reserve(struct server *srv, int err)
{
    struct sockaddr_storage peer;
    socklen_t peerlen = sizeof peer;
    int fd, refused = 0;

    if (srv->reserve == -1)
        return -1;
    if (close(srv->reserve) == -1)
        warn_errno(errno, "close the reserve fd %d", srv->reserve);
    srv->reserve = -1;
    fd = accept(srv->listener, (struct sockaddr *)&peer, &peerlen);
    if (fd != -1) {
        char text[ADDR_TEXT_MAX];

        narrate(
            "out of descriptors (%s): client %s refused: taken on the "
            "reserve descriptor and closed at once; new clients are "
            "served again when one leaves",
            errno_name(err),
            addr_format((struct sockaddr *)&peer, peerlen, text, sizeof text));
        if (close(fd) == -1)
            warn_errno(errno, "close fd %d", fd);
        refused = 1;
    } else if (!would_block(errno)) {
        warn_errno(errno, "accept on the reserve descriptor");
    }
    srv->reserve = open("/dev/null", O_RDONLY);
    if (srv->reserve == -1)
        warn_errno(errno, "open /dev/null as the reserve descriptor (will "
                          "pause the listener instead)");
    return refused;
}

/* Takes every connection waiting in the queue, until accept() says EAGAIN.
 * A client over the -m limit is closed at once: it sees end of stream at
 * once instead of hanging, and the others are not affected. */
static void accept_all(struct server *srv, long long now)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t peerlen = sizeof peer;
        char text[ADDR_TEXT_MAX];
        struct client *c;
        int fd = accept(srv->listener, (struct sockaddr *)&peer, &peerlen);

        if (fd == -1) {
            int err = errno;
            if (would_block(err))
                return; /* the queue is empty */
            if (accept_error_is_transient(err)) {
                warn_errno(err, "accept (that connection only; going on)");
                continue;
            }
            if (accept_error_is_exhaustion(err)) {
                int refused = err == EMFILE || err == ENFILE
                                  ? refuse_with_reserve(srv, err)
                                  : -1;
                if (refused == 1)
                    continue; /* there may be more in the queue */
                if (refused == 0)
                    return; /* the queue is empty */
                /* No reserve (or out of memory): stop watching the
                 * listener for a while instead of spinning on it. */
                narrate("accept: %s: not watching the listener for %d ms "
                        "or until a client leaves",
                        errno_name(err), PAUSE_MS);
                srv->paused_until = now + PAUSE_MS;
                return;
            }
            die("accept");
        }
        addr_format((struct sockaddr *)&peer, peerlen, text, sizeof text);
        /* On Linux an accepted socket does not inherit O_NONBLOCK from the
         * listener (on the BSDs it does): set it on every client. */
        if (set_nonblocking(fd) == -1) {
            warn_errno(errno, "fcntl O_NONBLOCK on fd %d", fd);
            if (close(fd) == -1)
                warn_errno(errno, "close fd %d", fd);
            continue;
        }
        /* The rule of select(): never FD_SET a descriptor at or above
         * FD_SETSIZE (the set has no bit for it). */
        if (fd >= FD_SETSIZE) {
            narrate("client %s refused: it got fd %d, and select() cannot "
                    "watch a descriptor at or above FD_SETSIZE (%d); closing "
                    "it at once (poll() has no such limit)",
                    text, fd, FD_SETSIZE);
            if (close(fd) == -1)
                warn_errno(errno, "close fd %d", fd);
            continue;
        }
        if (srv->count == srv->max) {
            narrate("client %s turned away: the -m limit of %zu is reached; "
                    "closing fd %d at once",
                    text, srv->max, fd);
            if (close(fd) == -1)
                warn_errno(errno, "close fd %d", fd);
            continue;
        }
        if (srv->set->keepalive && set_keepalive(fd, srv->set) == -1)
            warn_errno(errno, "keepalive on fd %d (going on without)", fd);
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            warn_errno(errno, "calloc for a client; closing fd %d", fd);
            if (close(fd) == -1)
                warn_errno(errno, "close fd %d", fd);
            continue;
        }
        c->fd = fd;
        c->last_active = now;
        memcpy(c->peer, text, sizeof c->peer);
        srv->clients[srv->count++] = c;
        narrate("client %s connected on fd %d (clients: %zu)", c->peer, fd,
                srv->count);
    }
}

/* ---- the loop ------------------------------------------------------------ */

/* select()'s timeout for a deadline: NULL (none: sleep until something is
 * ready), else the time left in *tv, zero if it has passed. */
static struct timeval *timeout_until(long long deadline, long long now,
                                     struct timeval *tv)
{
    long long left;

    if (deadline == NO_DEADLINE)
        return NULL;
    left = deadline > now ? deadline - now : 0;
    tv->tv_sec = (time_t)(left / 1000);
    tv->tv_usec = (suseconds_t)(left % 1000 * 1000);
    return tv;
}

/* Adds fd to set, and keeps *maxfd the highest descriptor added. Only
 * descriptors below FD_SETSIZE ever come here (see accept_all and main). */
static void watch(int fd, fd_set *set, int *maxfd)
{
    FD_SET(fd, set);
    if (fd > *maxfd)
        *maxfd = fd;
}

/*
 * Fills the watch sets from what everyone wants now, and returns the
 * nearest deadline select() must wake up for. *maxfd becomes the highest
 * descriptor in the sets. The listener is left out while it is paused.
 */
static long long watch_list(const struct server *srv, fd_set *rd, fd_set *wr,
                            int *maxfd, long long now)
{
    long long deadline = NO_DEADLINE;
    bool paused = srv->paused_until > now;

    FD_ZERO(rd);
    FD_ZERO(wr);
    *maxfd = -1;
    watch(srv->wake, rd, maxfd);
    if (!paused)
        watch(srv->listener, rd, maxfd);
    else
        deadline = srv->paused_until;
    for (size_t i = 0; i < srv->count; i++) {
        const struct client *c = srv->clients[i];
        int w = wants(c);
        if (w & WANT_READ)
            watch(c->fd, rd, maxfd);
        if (w & WANT_WRITE)
            watch(c->fd, wr, maxfd);
        if (srv->idle_ms > 0 && c->last_active + srv->idle_ms < deadline)
            deadline = c->last_active + srv->idle_ms;
    }
    return deadline;
}

/* What select()'s sets mean for serve(). select() has no POLLHUP: a socket
 * at end of stream or with an error is simply readable (and writable), and
 * read() or write() then says which. */
static int readiness(int fd, const fd_set *rd, const fd_set *wr)
{
    int ready = 0;

    if (FD_ISSET(fd, rd))
        ready |= CAN_READ;
    if (FD_ISSET(fd, wr))
        ready |= CAN_WRITE;
    return ready;
}

/* SIGINT or SIGTERM: stop accepting (closing the listener makes the kernel
 * refuse new connections), close every client, free everything. Bytes owed
 * in the server's memory are dropped, as the shutdown must not wait on a
 * slow reader; what the kernel holds in send buffers still goes out. */
static void shut_down(struct server *srv, int sig)
{
    narrate("%s: no longer accepting; closing %zu clients",
            sig == SIGINT ? "SIGINT" : "SIGTERM", srv->count);
    if (close(srv->listener) == -1)
        warn_errno(errno, "close the listener fd %d", srv->listener);
    for (size_t i = 0; i < srv->count; i++) {
        close_client(srv->clients[i], srv->set->linger0);
        free_client(srv->clients[i]);
    }
    srv->count = 0;
    if (srv->reserve != -1 && close(srv->reserve) == -1)
        warn_errno(errno, "close the reserve fd %d", srv->reserve);
    narrate("stopped");
}

int main(int argc, char **argv)
{
    struct settings set = {0, 0, false, 0, 0, 0, false};
    const struct stage_info info = {
        .name = "stage6_select",
        .summary = "an echo server for every client at once, sleeping in "
                   "select() until one of them is ready",
        .standard = OPT_ADDR | OPT_PORT | OPT_BACKLOG | OPT_QUIET | OPT_STEP |
                    OPT_NOREUSE,
        .extra = own_options,
        .on_extra = set_option,
        .ctx = &set,
    };
    struct options opt;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char text[ADDR_TEXT_MAX], host[ADDR_TEXT_MAX];
    unsigned port;
    int fd, on = 1, sig;
    struct sigaction ignore;
    struct server srv;
    fd_set rd, wr;
    unsigned long long nofile;

    options_parse(&opt, &info, argc, argv);
    exit_on_signals();
    /* options_parse has checked the literal already; this cannot fail. */
    if (addr_parse(opt.addr, opt.port, &addr, &addrlen) == -1)
        usage_error("-a %s: not an address literal", opt.addr);
    addr_format((struct sockaddr *)&addr, addrlen, text, sizeof text);

    /* Writing to a connection the peer has closed raises SIGPIPE, whose
     * default action ends the process: one vanished client would kill the
     * server. Ignored, the same mistake shows up as EPIPE from write(). */
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    if (sigaction(SIGPIPE, &ignore, NULL) == -1)
        die("sigaction SIGPIPE");
    nofile = raise_nofile_limit();

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
    addr_format((struct sockaddr *)&addr, addrlen, text, sizeof text);
    narrate("bound to %s", text);

    /* listen() makes the socket passive: it will never connect, read or
     * write; from now on it only produces connected sockets. */
    step("listen(%d) makes the socket passive; the kernel starts queueing "
         "connections",
         opt.backlog);
    if (listen(fd, opt.backlog) == -1)
        die("listen %s backlog %d", text, opt.backlog);

    /* Still non-blocking, though poll() says when a connection waits: by the
     * time accept() runs, the client may have reset and left the queue, and
     * a blocking accept() would then sleep with everyone else waiting. */
    step("fcntl(F_SETFL, O_NONBLOCK) on the listener: accept() will return "
         "EAGAIN instead of sleeping");
    if (set_nonblocking(fd) == -1)
        die("fcntl O_NONBLOCK on fd %d", fd);

    memset(&srv, 0, sizeof srv);
    srv.listener = fd;
    srv.set = &set;
    srv.idle_ms = (long long)set.idle * 1000;
    srv.wake = open_self_pipe();
    catch_signals();
    /* The sets must hold the listener and the self-pipe: only a parent that
     * left a thousand descriptors open could push them this high. */
    if (srv.wake >= FD_SETSIZE || fd >= FD_SETSIZE) {
        errno = EMFILE;
        die("descriptors %d and %d: select() needs them below FD_SETSIZE "
            "(%d)",
            fd, srv.wake, FD_SETSIZE);
    }
    narrate("self-pipe on fds %d and %d: SIGINT and SIGTERM write a byte "
            "that wakes select()",
            srv.wake, atomic_load(&wake_fd));
    /* The reserve: one descriptor held to take (and close at once) a
     * connection when the others run out. See refuse_with_reserve. */
    srv.reserve = open("/dev/null", O_RDONLY);
    if (srv.reserve == -1)
        die("open /dev/null as the reserve descriptor");
    narrate("reserve descriptor %d (/dev/null), for when descriptors run out",
            srv.reserve);
    ready_line("listening on", (struct sockaddr *)&addr, addrlen);

    srv.max = choose_maxclients(&set, nofile);
    /* Room for every client at once; the kernel hands out the pages only as
     * they are touched, so a large -m costs nothing until clients come. */
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers */
    srv.clients = calloc(srv.max, sizeof *srv.clients);
    srv.inbuf = malloc(READ_SIZE);
    if (srv.clients == NULL || srv.inbuf == NULL)
        die("calloc for %zu clients", srv.max);
    describe_keepalive(&set);
    if (set.idle > 0)
        narrate("idle timeout (-t): a client that moves no data for %lu s "
                "is closed",
                set.idle);
    if (set.linger0)
        narrate("-L: clients are closed with SO_LINGER {on, 0}: RST, no "
                "TIME_WAIT");
    port = addr_for_clients((struct sockaddr *)&addr, host, sizeof host);
    narrate("try: nc %s %u in several terminals: all are echoed at once; "
            "watch this process in top: 0%% CPU while nobody sends",
            host, port);
    narrate("client limit (-m): %zu; stop with Ctrl-C or: kill %ld", srv.max,
            (long)getpid());

    step("select() sleeps until the self-pipe, the listener or a client is "
         "ready");
    /* The event loop: build the watch sets from what each client wants,
     * sleep in select(), serve exactly what is ready, close the finished
     * after the scan, accept the newcomers, and again. */
    for (;;) {
        long long now = now_ms();
        int maxfd;
        long long deadline = watch_list(&srv, &rd, &wr, &maxfd, now);
        size_t watched = srv.count; /* clients[0..watched) are in the sets */
        struct timeval tv;

        if (select(maxfd + 1, &rd, &wr, NULL,
                   timeout_until(deadline, now, &tv)) == -1) {
            if (errno == EINTR)
                continue; /* a signal: its byte waits in the self-pipe */
            die("select");
        }
        now = now_ms();
        if (FD_ISSET(srv.wake, &rd) && (sig = take_signal(srv.wake)) != 0)
            break;
        for (size_t i = 0; i < watched; i++) {
            serve(srv.clients[i], readiness(srv.clients[i]->fd, &rd, &wr),
                  srv.inbuf, now);
            expire(srv.clients[i], srv.idle_ms, now);
        }
        close_finished(&srv);
        if (FD_ISSET(srv.listener, &rd))
            accept_all(&srv, now);
    }
    shut_down(&srv, sig);
    free(srv.clients);
    free(srv.inbuf);
    return 0;
}
