/*
 * server.c - the body of every stage 6 program (server.h says what each
 * function promises). Nothing here knows how the program waits: the loop in
 * stage6_poll.c, stage6_select.c or stage6_epoll.c calls serve() for each
 * client its readiness API reported, then close_finished() and accept_all(),
 * and the body calls back watch() whenever a client's wishes change.
 *
 * In reading order: the options; the listening socket (the steps of stages
 * 1 to 5); the self-pipe; the descriptor limit; one client (the output
 * buffer, echo, serve); the idle timeout; closing after the round; the
 * listener (accept and the reserve descriptor); shutdown.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* open_descriptors() looks at descriptor numbers up to this one, no further:
 * one fstat() each, once, at start. */
#define FD_SCAN_LIMIT     65536
#define MAX_CLIENTS_LIMIT 1000000
/* The ceiling for the descriptor limit: the hard limit may be "unlimited",
 * which some systems refuse as a soft limit (Linux caps it at nr_open). */
#define NOFILE_CAP 1048576
/* Out of descriptors with no reserve left: how long the listener rests. */
#define PAUSE_MS 1000
/* Reads per client per round: a client with more to send than one read
 * takes gets up to this many before the loop moves on, so a streaming
 * client needs fewer wakeups, and one fast client cannot starve the rest. */
#define READS_PER_ROUND 4
/* Connections taken per round: a connect flood cannot keep the loop from
 * serving the clients it has (Redis bounds its accepts per cycle the same
 * way). The rest stay queued, and the listener is reported ready again. */
#define ACCEPTS_PER_ROUND 64

/* The stage's own options. */
struct settings {
    unsigned long maxclients; /* -m; 0: from the descriptor limit */
    unsigned long idle;       /* -t, seconds; 0: no idle timeout */
    bool nagle;               /* -N: leave Nagle's algorithm on */
};

static const struct stage_option own_options[] = {
    {'m', "MAXCLIENTS",
     "clients served at once; one more is closed at once "
     "(default: as many as the descriptor limit leaves room for)"},
    {'t', "SECONDS",
     "close a client that has moved no data for this long "
     "(default: never)"},
    {'N', NULL,
     "keep Nagle's algorithm: do not set TCP_NODELAY on clients (F46)"},
    {0, NULL, NULL},
};

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
    case 'N':
        s->nagle = true;
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

/* ---- signals: the self-pipe ---------------------------------------------- */

/*
 * The write end of the self-pipe, or -1 until the loop is ready. A handler
 * may only touch lock-free atomics or volatile sig_atomic_t (C11 7.14.1.1),
 * hence the atomic int.
 */
static atomic_int wake_fd = -1;

/*
 * SIGINT and SIGTERM. Setting a flag and testing it before the wait has a
 * race: a signal that lands after the test and before the wait is only seen
 * when something else wakes the loop, maybe never. Instead the handler
 * writes the signal's number into a pipe whose read end the loop watches: a
 * signal at any moment leaves a byte there, and the wait returns at once.
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

void wait_failed(const char *call)
{
    if (errno != EINTR)
        die("%s", call);
}

int take_signal(int fd)
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
 * Sets the soft limit in *rl to want, or, where the system refuses that
 * with EINVAL, to the highest value it accepts: macOS answers EINVAL above
 * its own cap (kern.maxfilesperproc) even when the hard limit is
 * "unlimited". Acceptance is a threshold, so a binary search between the
 * limit in force and want finds it in a few calls (Redis steps down by 16
 * instead). Returns the limit now in force.
 */
static rlim_t set_soft_limit(struct rlimit *rl, rlim_t want)
{
    rlim_t low = rl->rlim_cur, high = want; /* low works; high is to try */

    rl->rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, rl) == 0)
        return want;
    if (errno != EINVAL) {
        warn_errno(errno, "setrlimit RLIMIT_NOFILE to %llu (keeping %llu)",
                   (unsigned long long)want, (unsigned long long)low);
        rl->rlim_cur = low;
        return low;
    }
    while (high - low > 1) {
        rlim_t mid = low + (high - low) / 2;
        rl->rlim_cur = mid;
        if (setrlimit(RLIMIT_NOFILE, rl) == 0)
            low = mid;
        else
            high = mid;
    }
    return low; /* the last call that succeeded set it */
}

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
        rlim_t was = rl.rlim_cur, got = set_soft_limit(&rl, want);
        if (got == was)
            return was;
        narrate("descriptor limit raised from %llu to %llu (RLIMIT_NOFILE: "
                "the soft limit, up to the hard limit%s; see ulimit -n)",
                (unsigned long long)was, (unsigned long long)got,
                got < want ? ", as far as this system accepts" : "");
        return got;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > NOFILE_CAP)
        rl.rlim_cur = NOFILE_CAP;
    narrate("descriptor limit: %llu (RLIMIT_NOFILE, already as high as it "
            "goes; see ulimit -n)",
            (unsigned long long)rl.rlim_cur);
    return rl.rlim_cur;
}

/* How many descriptors below limit are open now. Besides the server's own
 * seven (stdin, stdout, stderr, the listener, the self-pipe's two ends and
 * the reserve), a parent may have left some open (a terminal inside an
 * editor can): each takes the room of a client. */
static unsigned long long open_descriptors(unsigned long long limit)
{
    unsigned long long count = 0;
    struct stat st;

    if (limit > FD_SCAN_LIMIT)
        limit = FD_SCAN_LIMIT;
    for (int fd = 0; (unsigned long long)fd < limit; fd++)
        if (fstat(fd, &st) == 0)
            count++;
    return count;
}

/* How many clients to serve at once: -m, or as many as the descriptor limit
 * (and the program's ceiling, select()'s FD_SETSIZE) leaves room for, after
 * the descriptors open now and those the program opens later (extra_fds). */
static size_t choose_maxclients(const struct settings *s,
                                unsigned long long nofile,
                                const struct program *prog)
{
    unsigned long long room, own;

    if (prog->fd_ceiling > 0 && nofile > (unsigned long long)prog->fd_ceiling)
        nofile = (unsigned long long)prog->fd_ceiling;
    own = open_descriptors(nofile) + (unsigned long long)prog->extra_fds;
    room = nofile > own ? nofile - own : 1;
    if (s->maxclients == 0)
        return room > MAX_CLIENTS_LIMIT ? MAX_CLIENTS_LIMIT : (size_t)room;
    if (s->maxclients > room)
        narrate("-m %lu is more than %s can hold here (%llu): beyond that, a "
                "client is refused at once",
                s->maxclients, prog->name, room);
    return s->maxclients;
}

/*
 * The listening socket, as stages 2 to 5 made it: socket(), SO_REUSEADDR,
 * bind(), getsockname(), listen(), O_NONBLOCK. Still non-blocking, though
 * the wait says when a connection is queued: by the time accept() runs, the
 * client may have reset and left the queue, and a blocking accept() would
 * then sleep with everyone else waiting. Fills *addr and *addrlen with the
 * address the kernel gave it; returns the descriptor.
 */
static int open_listener(const struct options *opt,
                         struct sockaddr_storage *addr, socklen_t *addrlen)
{
    char text[ADDR_TEXT_MAX];
    int fd, on = 1;

    /* options_parse has checked the literal already; this cannot fail. */
    if (addr_parse(opt->addr, opt->port, addr, addrlen) == -1)
        usage_error("-a %s: not an address literal", opt->addr);
    addr_format((struct sockaddr *)addr, *addrlen, text, sizeof text);

    step("socket() creates the endpoint (stage 1)");
    fd = socket(addr->ss_family, SOCK_STREAM, 0);
    if (fd == -1)
        die("socket");
    narrate("socket() returned descriptor %d", fd);
    if (opt->reuseaddr) {
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
    if (bind(fd, (struct sockaddr *)addr, *addrlen) == -1) {
        int err = errno;
        warn_errno(err, "bind %s", text);
        bind_hint(err, opt->addr, opt->port);
        exit(1);
    }
    *addrlen = sizeof *addr;
    if (getsockname(fd, (struct sockaddr *)addr, addrlen) == -1)
        die("getsockname");
    addr_format((struct sockaddr *)addr, *addrlen, text, sizeof text);
    narrate("bound to %s", text);
    step("listen(%d) makes the socket passive; the kernel starts queueing "
         "connections",
         opt->backlog);
    if (listen(fd, opt->backlog) == -1)
        die("listen %s backlog %d", text, opt->backlog);
    step("fcntl(F_SETFL, O_NONBLOCK) on the listener: accept() will return "
         "EAGAIN instead of sleeping");
    if (set_nonblocking(fd) == -1)
        die("fcntl O_NONBLOCK on fd %d", fd);
    return fd;
}

void server_start(struct server *srv, const struct program *prog, int argc,
                  char **argv)
{
    static struct settings set;
    static char summary[128];
    const struct stage_info info = {
        .name = prog->name,
        .summary = summary,
        .standard = OPT_ADDR | OPT_PORT | OPT_BACKLOG | OPT_QUIET | OPT_STEP |
                    OPT_NOREUSE,
        .extra = own_options,
        .on_extra = set_option,
        .ctx = &set,
    };
    struct options opt;
    struct sigaction ignore;
    unsigned long long nofile;

    snprintf(summary, sizeof summary,
             "an echo server for every client at once, sleeping in %s until "
             "one of them is ready",
             prog->api);
    options_parse(&opt, &info, argc, argv);
    exit_on_signals();
    /* Writing to a connection the peer has closed raises SIGPIPE, whose
     * default action ends the process: one vanished client would kill the
     * server. Ignored, the same mistake shows up as EPIPE from write(). */
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    if (sigaction(SIGPIPE, &ignore, NULL) == -1)
        die("sigaction SIGPIPE");
    nofile = raise_nofile_limit();

    memset(srv, 0, sizeof *srv);
    srv->listener = open_listener(&opt, &srv->addr, &srv->addrlen);
    srv->idle_ms = (long long)set.idle * 1000;
    srv->nodelay = !set.nagle;
    srv->wake = open_self_pipe();
    /* No SA_RESTART: the waits are never restarted anyway (they fail with
     * EINTR), and a Ctrl-C in step mode should interrupt the pause. */
    on_stop_signals(on_signal);
    /* The sets of select() must hold the listener and the self-pipe: only a
     * parent that left a thousand descriptors open could push them this
     * high. */
    if (prog->fd_ceiling > 0 &&
        (srv->listener >= prog->fd_ceiling || srv->wake >= prog->fd_ceiling)) {
        errno = EMFILE;
        die("descriptors %d and %d: %s needs them below %d", srv->listener,
            srv->wake, prog->api, prog->fd_ceiling);
    }
    narrate("self-pipe on fds %d and %d: SIGINT and SIGTERM write a byte "
            "that wakes %s",
            srv->wake, atomic_load(&wake_fd), prog->api);
    /* The reserve: one descriptor held to take (and close at once) a
     * connection when the others run out. See refuse_with_reserve. */
    srv->reserve = open("/dev/null", O_RDONLY);
    if (srv->reserve == -1)
        die("open /dev/null as the reserve descriptor");
    narrate("reserve descriptor %d (/dev/null), for when descriptors run out",
            srv->reserve);

    srv->max = choose_maxclients(&set, nofile, prog);
    /* Room for every client at once; the kernel hands out the pages only as
     * they are touched, so a large -m costs nothing until clients come. */
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers */
    srv->clients = calloc(srv->max, sizeof *srv->clients);
    srv->inbuf = malloc(READ_SIZE);
    if (srv->clients == NULL || srv->inbuf == NULL)
        die("calloc for %zu clients", srv->max);
    if (set.idle > 0)
        narrate("idle timeout (-t): a client that moves no data for %lu s "
                "is closed",
                set.idle);
    if (srv->nodelay)
        narrate("TCP_NODELAY on every client: an echo goes out at once, not "
                "held back by Nagle's algorithm (-N keeps it)");
    else
        narrate("-N: Nagle's algorithm stays on: a small echo may wait for "
                "the client's delayed ACK");
}

void server_ready(const struct server *srv, const struct program *prog)
{
    char host[ADDR_TEXT_MAX];
    unsigned port;

    port = addr_for_clients((struct sockaddr *)&srv->addr, host, sizeof host);
    narrate("try: nc %s %u in several terminals: all are echoed at once; "
            "watch this process in top: 0%% CPU while nobody sends",
            host, port);
    narrate("client limit (-m): %zu; stop with Ctrl-C or: kill %ld", srv->max,
            (long)getpid());
    ready_line("listening on", (struct sockaddr *)&srv->addr, srv->addrlen);
    step("%s sleeps until the self-pipe, the listener or a client is ready",
         prog->api);
    /* From here on, nothing may wait on stdout: see prepare_wait. */
    narration_batch();
}

long long now_ms(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
        die("clock_gettime CLOCK_MONOTONIC");
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool accepting(const struct server *srv, long long now)
{
    return srv->paused_until <= now;
}

/* How soon to try stdout again while narration is queued: a person
 * watching sees the lines as soon as stdout takes them. */
#define NARRATION_RETRY_MS 50

long long prepare_wait(const struct server *srv, long long now)
{
    long long deadline = NO_DEADLINE;

    /* A line a client's arrival or departure made waits for the end of the
     * round, and then goes out with all the others in one write(), or is
     * kept (and in the end dropped) if stdout cannot take it now. A server
     * that waited for its own output would stop serving everyone as soon
     * as nobody read it: a pager, a stopped terminal, a slow pipe. */
    if (narration_flush())
        deadline = now + NARRATION_RETRY_MS;
    if (!accepting(srv, now) && srv->paused_until < deadline)
        deadline = srv->paused_until;
    if (srv->idle_ms > 0 && srv->oldest != NULL &&
        srv->oldest->last_active + srv->idle_ms < deadline)
        deadline = srv->oldest->last_active + srv->idle_ms;
    return deadline;
}

int timeout_ms(long long deadline, long long now)
{
    if (deadline == NO_DEADLINE)
        return -1;
    if (deadline <= now)
        return 0;
    return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

/* ---- one client ---------------------------------------------------------- */

/* The bytes c is owed and has not taken yet. */
static size_t owed(const struct client *c)
{
    return c->end - c->start;
}

/* What c wants next: WANT_READ, WANT_WRITE, or both. */
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

/* Puts c on the list of clients closed after this round, saying why. */
static void finish(struct server *srv, struct client *c, const char *why)
{
    if (c->ending != NULL)
        return;
    c->ending = why;
    c->next_done = srv->done;
    srv->done = c;
}

/* An error on c's connection (ECONNRESET, EPIPE, ...): said, and c closes. */
static void fail(struct server *srv, struct client *c, const char *call)
{
    warn_errno(errno, "%s %s on fd %d", call, c->peer, c->fd);
    finish(srv, c, "ended by an error");
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
    c->end += (unsigned)n;
    return 0;
}

/* Writes what c is owed, as much as the kernel takes now. A short write is
 * normal: the rest waits until the socket is writable again. Returns the
 * bytes written. */
static size_t send_owed(struct server *srv, struct client *c)
{
    ssize_t n = write(c->fd, c->out + c->start, owed(c));

    if (n == -1) {
        if (!would_block(errno) && errno != EINTR)
            fail(srv, c, "write to");
        return 0;
    }
    c->start += (unsigned)n;
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
static void echo(struct server *srv, struct client *c, const char *buf,
                 size_t n)
{
    size_t sent = 0;

    if (owed(c) == 0) {
        ssize_t w = write(c->fd, buf, n);
        if (w == -1 && !would_block(errno) && errno != EINTR) {
            fail(srv, c, "write to");
            return;
        }
        if (w > 0) {
            sent = (size_t)w;
            c->echoed += w;
        }
    }
    if (sent < n && keep(c, buf + sent, n - sent) == -1)
        fail(srv, c, "keeping output for");
}

/* One read from c into the shared buffer, echoed at once. Returns the bytes
 * read; *more is true when the read filled all the room it was given (the
 * kernel may hold more). End of stream sets eof. */
static size_t read_and_echo(struct server *srv, struct client *c, bool *more)
{
    size_t room = OUT_CAP - owed(c); /* so that what is kept fits */
    size_t ask = room < READ_SIZE ? room : READ_SIZE;
    ssize_t n = read(c->fd, srv->inbuf, ask);

    *more = false;
    if (n > 0) {
        *more = (size_t)n == ask;
        echo(srv, c, srv->inbuf, (size_t)n);
        return (size_t)n;
    }
    if (n == 0)
        c->eof = true; /* end of stream: no more reading; what is owed is
                          still sent, then the client closes */
    else if (!would_block(errno) && errno != EINTR)
        fail(srv, c, "read from");
    return 0;
}

/* -t: takes c out of the list of clients by activity. */
static void unlink_idle(struct server *srv, struct client *c)
{
    if (c->older != NULL)
        c->older->newer = c->newer;
    else
        srv->oldest = c->newer;
    if (c->newer != NULL)
        c->newer->older = c->older;
    else
        srv->newest = c->older;
}

/* -t: puts c at the end of that list, as the most recently active. */
static void append_idle(struct server *srv, struct client *c)
{
    c->older = srv->newest;
    c->newer = NULL;
    if (srv->newest != NULL)
        srv->newest->newer = c;
    else
        srv->oldest = c;
    srv->newest = c;
}

/* -t: c moved data now; it becomes the newest in the list by activity, so
 * the list stays ordered by last_active without ever being sorted. */
static void touch(struct server *srv, struct client *c, long long now)
{
    c->last_active = now;
    if (srv->idle_ms == 0 || srv->newest == c)
        return;
    unlink_idle(srv, c);
    append_idle(srv, c);
}

void serve(struct server *srv, struct client *c, int ready, long long now)
{
    size_t moved = 0;
    bool more = true;

    if ((ready & CAN_WRITE) && owed(c) > 0)
        moved += send_owed(srv, c);
    /* Read until a read comes back short (the kernel had no more), the
     * budget is spent, or the client is owed too much to take more. */
    for (int i = 0; i < READS_PER_ROUND && more && (ready & CAN_READ) &&
                    c->ending == NULL && (wants(c) & WANT_READ);
         i++)
        moved += read_and_echo(srv, c, &more);
    if (moved > 0)
        touch(srv, c, now);
    if (c->eof && owed(c) == 0)
        finish(srv, c, "left");
    /*
     * Hung up (POLLHUP, POLLERR) and nothing moved: nothing more will happen
     * on this connection, unless bytes are still owed. On Linux (and the
     * BSDs) POLLHUP means both directions are shut, and read() or write()
     * has already said so. macOS's poll() reports POLLHUP, without POLLOUT,
     * as soon as the peer has only half-closed (read in xnu's source, and
     * tested with tests/fault/bsdpoll.c): a client still owed its echo must
     * then not be closed, but served until the bytes are delivered or a
     * write fails.
     */
    if ((ready & HUNG_UP) && moved == 0 && owed(c) == 0)
        finish(srv, c, "hung up");
    if (c->ending == NULL && wants(c) != c->wishes) {
        c->wishes = wants(c);
        if (watch(srv, c) == -1)
            finish(srv, c, "ended: it could not be watched");
    }
}

/* ---- closing, after the round -------------------------------------------- */

void expire_idle(struct server *srv, long long now)
{
    struct client *c;

    if (srv->idle_ms == 0)
        return;
    /* Oldest first: the first one that is not idle for long enough ends
     * the walk, however many clients there are. */
    for (c = srv->oldest; c != NULL && now - c->last_active >= srv->idle_ms;
         c = c->newer)
        finish(srv, c, "closed: idle too long (-t)");
}

static void close_fd(int fd)
{
    if (close(fd) == -1)
        warn_errno(errno, "close fd %d", fd);
}

static void free_client(struct client *c)
{
    free(c->out);
    free(c);
}

/* Removes c from the table: the last client fills its slot. */
static void remove_client(struct server *srv, struct client *c)
{
    struct client *last = srv->clients[--srv->count];

    unwatch(srv, c);
    if (srv->idle_ms > 0)
        unlink_idle(srv, c);
    if (last != c) {
        last->slot = c->slot;
        srv->clients[last->slot] = last;
        if (watch(srv, last) == -1) /* only poll() cares where it is */
            finish(srv, last, "ended: it could not be watched");
    }
}

/* Closes and frees the clients on the list, after the scan: removing them
 * while the readiness API's answer is walked would skip or repeat one. A
 * client leaving frees a descriptor, so the listener is watched again and a
 * lost reserve is taken back. */
void close_finished(struct server *srv)
{
    while (srv->done != NULL) {
        struct client *c = srv->done;

        srv->done = c->next_done;
        remove_client(srv, c);
        close_fd(c->fd);
        narrate("client %s on fd %d %s: %lld bytes echoed (clients: %zu)",
                c->peer, c->fd, c->ending, c->echoed, srv->count);
        free_client(c);
        srv->paused_until = 0;
        if (srv->reserve == -1)
            srv->reserve = open("/dev/null", O_RDONLY);
    }
}

/* ---- the listener -------------------------------------------------------- */

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

/*
 * Out of descriptors (EMFILE: this process; ENFILE: the whole system), the
 * connection stays in the queue and the listener stays readable: the wait
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
        close_fd(fd);
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

/* accept() failed with err: says so and decides. Returns true to go on
 * taking connections this round, false to stop. */
static bool accept_failed(struct server *srv, int err, long long now)
{
    int refused;

    if (would_block(err))
        return false; /* the queue is empty */
    if (accept_error_is_transient(err)) {
        warn_errno(err, "accept (that connection only; going on)");
        return true;
    }
    if (!accept_error_is_exhaustion(err))
        die("accept");
    refused =
        err == EMFILE || err == ENFILE ? refuse_with_reserve(srv, err) : -1;
    if (refused == 1)
        return true; /* there may be more in the queue */
    if (refused == 0)
        return false; /* the queue is empty */
    /* No reserve (or out of memory): stop watching the listener for a
     * while instead of spinning on it. */
    narrate("accept: %s: not watching the listener for %d ms or until a "
            "client leaves",
            errno_name(err), PAUSE_MS);
    srv->paused_until = now + PAUSE_MS;
    return false;
}

/* A new connection on fd: non-blocking, TCP_NODELAY, a client of its own,
 * watched. Closed at once (the client sees end of stream at once instead of
 * hanging) when any of that fails or the -m limit is reached. */
static void add_client(struct server *srv, int fd, const char *peer,
                       long long now)
{
    struct client *c;
    int on = 1;

    /* On Linux an accepted socket does not inherit O_NONBLOCK from the
     * listener (on the BSDs it does): set it on every client. */
    if (set_nonblocking(fd) == -1) {
        warn_errno(errno, "fcntl O_NONBLOCK on fd %d", fd);
        close_fd(fd);
        return;
    }
    if (srv->count == srv->max) {
        narrate("client %s turned away: the -m limit of %zu is reached; "
                "closing fd %d at once",
                peer, srv->max, fd);
        close_fd(fd);
        return;
    }
    /* Nagle's algorithm holds back a small segment while an earlier one is
     * unacknowledged, and the client delays its ACK hoping to piggyback it
     * on data: an echo's tail can wait tens of milliseconds, and a stream
     * goes out in fewer, later segments (F46). An echo server writes what
     * it has as soon as it has it, so it turns Nagle off. */
    if (srv->nodelay &&
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == -1)
        warn_errno(errno, "TCP_NODELAY on fd %d (going on without)", fd);
    /* Urgent data (send() with MSG_OOB) is one byte marked inside the
     * stream; unless SO_OOBINLINE is set, the kernel takes it out of the
     * stream and read() never sees it: the echo would silently lose it.
     * RFC 6093 asks new applications not to send it, and those that may
     * receive it to keep it in line (F45). */
    if (setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &on, sizeof on) == -1)
        warn_errno(errno, "SO_OOBINLINE on fd %d (going on without)", fd);
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        warn_errno(errno, "calloc for a client; closing fd %d", fd);
        close_fd(fd);
        return;
    }
    c->fd = fd;
    c->wishes = WANT_READ;
    c->slot = (unsigned)srv->count;
    memcpy(c->peer, peer, sizeof c->peer);
    if (watch(srv, c) == -1) {
        close_fd(fd);
        free_client(c);
        return;
    }
    srv->clients[srv->count++] = c;
    c->last_active = now;
    if (srv->idle_ms > 0)
        append_idle(srv, c);
    narrate("client %s connected on fd %d (clients: %zu)", c->peer, fd,
            srv->count);
}

void accept_all(struct server *srv, long long now)
{
    for (int i = 0; i < ACCEPTS_PER_ROUND; i++) {
        struct sockaddr_storage peer;
        socklen_t peerlen = sizeof peer;
        char text[ADDR_TEXT_MAX];
        int fd = accept(srv->listener, (struct sockaddr *)&peer, &peerlen);

        if (fd == -1) {
            if (accept_failed(srv, errno, now))
                continue;
            return;
        }
        addr_format((struct sockaddr *)&peer, peerlen, text, sizeof text);
        add_client(srv, fd, text, now);
    }
}

/* ---- shutdown ------------------------------------------------------------ */

/* Closing the listener makes the kernel refuse new connections. Bytes owed
 * in the server's memory are dropped, as the shutdown must not wait on a
 * slow reader; what the kernel holds in send buffers still goes out. */
void server_stop(struct server *srv, int sig)
{
    narrate("%s: no longer accepting; closing %zu clients",
            sig == SIGINT ? "SIGINT" : "SIGTERM", srv->count);
    if (close(srv->listener) == -1)
        warn_errno(errno, "close the listener fd %d", srv->listener);
    for (size_t i = 0; i < srv->count; i++) {
        close_fd(srv->clients[i]->fd);
        free_client(srv->clients[i]);
    }
    srv->count = 0;
    if (srv->reserve != -1 && close(srv->reserve) == -1)
        warn_errno(errno, "close the reserve fd %d", srv->reserve);
    free(srv->clients);
    free(srv->inbuf);
    narrate("stopped");
    narration_end(1000);
}
