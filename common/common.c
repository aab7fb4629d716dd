/*
 * common.c - error reporting, options, address text, narration, step mode
 * and signal handling shared by every stage. See common.h for each
 * function's contract.
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Set once by options_parse, read-only afterwards. (The signal handler
 * reads none of them: see on_signal.) */
static const char *progname = "stage";
static const struct stage_info *stage;
static bool quiet;
static bool stepping;

#ifndef PIPE_BUF /* limits.h may leave it out; POSIX's least value then */
#define PIPE_BUF _POSIX_PIPE_BUF
#endif

/* Event-loop narration (narration_batch): lines wait in pending[0..queued)
 * until narration_flush writes them; lines that do not fit are counted in
 * dropped, and the count is said once stdout has taken everything else. */
#define NARRATION_QUEUE 65536
static char pending[NARRATION_QUEUE];
static size_t queued;
static unsigned long dropped;
static bool batching;

bool narrating(void)
{
    return !quiet;
}

/*
 * errno names. strerror() gives only the text and glibc's strerrorname_np()
 * is not portable, so keep a table of the ones a socket program meets.
 * The few names POSIX does not require stand behind #ifdef.
 */
static const struct {
    int value;
    const char *name;
} errno_names[] = {
    {EPERM, "EPERM"},
    {ENOENT, "ENOENT"},
    {EINTR, "EINTR"},
    {EIO, "EIO"},
    {EBADF, "EBADF"},
    {EAGAIN, "EAGAIN"},
    {ENOMEM, "ENOMEM"},
    {EACCES, "EACCES"},
    {EFAULT, "EFAULT"},
    {EBUSY, "EBUSY"},
    {EEXIST, "EEXIST"},
    {EINVAL, "EINVAL"},
    {ENFILE, "ENFILE"},
    {EMFILE, "EMFILE"},
    {ENOSPC, "ENOSPC"},
    {EPIPE, "EPIPE"},
    {ERANGE, "ERANGE"},
    {ENOSYS, "ENOSYS"},
    {ENOTSOCK, "ENOTSOCK"},
    {EDESTADDRREQ, "EDESTADDRREQ"},
    {EMSGSIZE, "EMSGSIZE"},
    {EPROTOTYPE, "EPROTOTYPE"},
    {ENOPROTOOPT, "ENOPROTOOPT"},
    {EPROTONOSUPPORT, "EPROTONOSUPPORT"},
    {EOPNOTSUPP, "EOPNOTSUPP"},
    {EAFNOSUPPORT, "EAFNOSUPPORT"},
    {EADDRINUSE, "EADDRINUSE"},
    {EADDRNOTAVAIL, "EADDRNOTAVAIL"},
    {ENETDOWN, "ENETDOWN"},
    {ENETUNREACH, "ENETUNREACH"},
    {ECONNABORTED, "ECONNABORTED"},
    {ECONNRESET, "ECONNRESET"},
    {ENOBUFS, "ENOBUFS"},
    {EISCONN, "EISCONN"},
    {ENOTCONN, "ENOTCONN"},
    {ETIMEDOUT, "ETIMEDOUT"},
    {ECONNREFUSED, "ECONNREFUSED"},
    {EHOSTUNREACH, "EHOSTUNREACH"},
    {EALREADY, "EALREADY"},
    {EINPROGRESS, "EINPROGRESS"},
    {EPROTO, "EPROTO"},
    {ENOTTY, "ENOTTY"},
#ifdef ESOCKTNOSUPPORT
    {ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT"},
#endif
#ifdef EPFNOSUPPORT
    {EPFNOSUPPORT, "EPFNOSUPPORT"},
#endif
#ifdef ESHUTDOWN
    {ESHUTDOWN, "ESHUTDOWN"},
#endif
#ifdef EHOSTDOWN
    {EHOSTDOWN, "EHOSTDOWN"},
#endif
};

const char *errno_name(int err)
{
    static char unknown[32];

    /* EWOULDBLOCK may equal EAGAIN; the table lists EAGAIN, the POSIX name. */
    for (size_t i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++)
        if (errno_names[i].value == err)
            return errno_names[i].name;
    snprintf(unknown, sizeof unknown, "errno %d", err);
    return unknown;
}

static void vreport(int err, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);

static void vreport(int err, const char *fmt, va_list ap)
{
    char what[256];

    vsnprintf(what, sizeof what, fmt, ap);
    /* Keep narration and the error in order on a terminal (in the event
     * loop, only what stdout takes now). */
    if (batching)
        narration_flush();
    fflush(stdout);
    fprintf(stderr, "%s: %s: %s (%s)\n", progname, what, errno_name(err),
            strerror(err));
}

void die(const char *fmt, ...)
{
    int err = errno;
    va_list ap;

    va_start(ap, fmt);
    vreport(err, fmt, ap);
    va_end(ap);
    exit(1);
}

void warn_errno(int err, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    vreport(err, fmt, ap);
    va_end(ap);
    errno = saved;
}

/* Adds one line to the queue, or counts it as dropped if it does not fit. */
static void queue_line(const char *line, size_t len)
{
    if (queued + len + 1 > sizeof pending) {
        dropped++;
        return;
    }
    memcpy(pending + queued, line, len);
    pending[queued + len] = '\n';
    queued += len + 1;
}

void narrate(const char *fmt, ...)
{
    va_list ap;

    if (quiet)
        return;
    va_start(ap, fmt);
    if (batching) {
        char line[512];
        int n = vsnprintf(line, sizeof line, fmt, ap);
        if (n >= 0)
            queue_line(line,
                       (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    } else {
        vprintf(fmt, ap);
        putchar('\n');
        fflush(stdout);
    }
    va_end(ap);
}

void narration_batch(void)
{
    fflush(stdout);
    batching = true;
}

/*
 * Whether stdout takes PIPE_BUF bytes now without sleeping. poll() with a
 * timeout of 0 asks without waiting; for a pipe or FIFO, POLLOUT means room
 * for PIPE_BUF bytes (Linux and the BSDs alike), and a write of that much is
 * never split. O_NONBLOCK is not an option: it belongs to the open file
 * description, which stdout shares with the shell that started the program,
 * and would be left on the shell's terminal after we exit. (A terminal
 * reports POLLOUT once its buffer has some room; a write of PIPE_BUF bytes
 * may then wait until the terminal takes the rest, a moment at most unless
 * the terminal stops reading in between.)
 */
static bool stdout_ready(void)
{
    struct pollfd p = {.fd = STDOUT_FILENO, .events = POLLOUT};

    return poll(&p, 1, 0) == 1 && (p.revents & (POLLOUT | POLLERR | POLLHUP));
}

bool narration_flush(void)
{
    ssize_t n;

    if (queued == 0 || !stdout_ready())
        return queued > 0;
    n = write(STDOUT_FILENO, pending, queued < PIPE_BUF ? queued : PIPE_BUF);
    if (n > 0) {
        memmove(pending, pending + n, queued - (size_t)n);
        queued -= (size_t)n;
    } else if (n == -1 && errno != EINTR && errno != EAGAIN) {
        /* stdout is gone (EPIPE: nobody reads the pipe any more): what is
         * queued can never be written; count its lines as dropped. */
        for (size_t i = 0; i < queued; i++)
            dropped += pending[i] == '\n';
        queued = 0;
        return false;
    }
    if (queued == 0 && dropped > 0) {
        char note[160];
        int len = snprintf(note, sizeof note,
                           "narration: %lu lines dropped: stdout could not "
                           "take them without holding up the server",
                           dropped);
        dropped = 0;
        queue_line(note, (size_t)len);
    }
    return queued > 0;
}

void narration_end(int max_ms)
{
    int waited = 0;

    while (narration_flush() && waited < max_ms) {
        struct pollfd p = {.fd = STDOUT_FILENO, .events = POLLOUT};
        if (poll(&p, 1, 10) == -1 && errno != EINTR)
            break;
        waited += 10;
    }
    batching = false;
}

void bind_hint(int err, const char *addr, unsigned port)
{
    switch (err) {
    case EADDRINUSE:
        narrate("hint: another socket holds port %u (a listener, a bound "
                "socket, or connections in TIME_WAIT; `ss -tanp 'sport = "
                ":%u'` shows all but a socket that is only bound); stop it, "
                "wait for TIME_WAIT to end, or pick another port (-p 0)",
                port, port);
        break;
    case EACCES:
        narrate("hint: ports below the unprivileged limit need root or "
                "CAP_NET_BIND_SERVICE%s; use a port above it, e.g. -p 8080",
#ifdef __linux__
                " (Linux: /proc/sys/net/ipv4/ip_unprivileged_port_start)"
#else
                ""
#endif
        );
        break;
    case EADDRNOTAVAIL:
        narrate("hint: %s is not an address of this host (list them with "
                "`ip addr` or `ifconfig`); 127.0.0.1 and ::1 always are",
                addr);
        break;
    default:
        break;
    }
}

/* ---- options ---------------------------------------------------------- */

int parse_number(const char *text, unsigned long min, unsigned long max,
                 unsigned long *out)
{
    unsigned long value = 0;

    /* Digits only: strtoul would accept "+1", " 1" and "-1" (as a huge
     * number), none of which a user means as a port. */
    if (*text == '\0')
        return -1;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (value > (ULONG_MAX - (unsigned long)(*p - '0')) / 10)
            return -1;
        value = value * 10 + (unsigned long)(*p - '0');
    }
    if (value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

/* The standard options in the order usage shows them. */
static const struct {
    unsigned flag;
    struct stage_option opt;
} standard_options[] = {
    {OPT_ADDR,
     {'a', "ADDR",
      "address to bind: IPv4 or IPv6 literal, 0.0.0.0 "
      "or :: for every interface (default " DEFAULT_ADDR ")"}},
    {OPT_PORT,
     {'p', "PORT",
      "port, 0 to 65535; 0 lets the kernel choose "
      "(default 6969)"}},
    {OPT_BACKLOG,
     {'b', "BACKLOG",
      "the listen() backlog, a positive integer "
      "(default 128)"}},
    {OPT_QUIET,
     {'q', NULL,
      "quiet: no narration, only the readiness line "
      "and errors"}},
    {OPT_STEP,
     {'s', NULL,
      "step mode: pause before each lifecycle call "
      "(when stdin is a terminal)"}},
    {OPT_NOREUSE,
     {'R', NULL,
      "do not set SO_REUSEADDR, to see bind() fail "
      "while the port has TIME_WAIT connections"}},
};

#define N_STANDARD (sizeof standard_options / sizeof standard_options[0])

static void print_option_brief(FILE *f, const struct stage_option *opt)
{
    if (opt->argname != NULL)
        fprintf(f, " [-%c %s]", opt->letter, opt->argname);
    else
        fprintf(f, " [-%c]", opt->letter);
}

static void print_usage_line(FILE *f)
{
    fprintf(f, "usage: %s", progname);
    for (size_t i = 0; i < N_STANDARD; i++)
        if (stage->standard & standard_options[i].flag)
            print_option_brief(f, &standard_options[i].opt);
    for (const struct stage_option *o = stage->extra; o && o->letter; o++)
        print_option_brief(f, o);
    fprintf(f, " [-h]\n");
}

static void print_option_help(const struct stage_option *opt)
{
    char left[32];

    if (opt->argname != NULL)
        snprintf(left, sizeof left, "-%c %s", opt->letter, opt->argname);
    else
        snprintf(left, sizeof left, "-%c", opt->letter);
    printf("  %-14s %s\n", left, opt->help);
}

static NORETURN void print_help(void)
{
    printf("%s: %s\n\n", progname, stage->summary);
    print_usage_line(stdout);
    printf("\noptions:\n");
    for (size_t i = 0; i < N_STANDARD; i++)
        if (stage->standard & standard_options[i].flag)
            print_option_help(&standard_options[i].opt);
    for (const struct stage_option *o = stage->extra; o && o->letter; o++)
        print_option_help(o);
    print_option_help(&(struct stage_option){'h', NULL,
                                             "print this help "
                                             "and exit"});
    if (stage->standard & OPT_PORT)
        printf("\nStops with status 0 on SIGINT (Ctrl-C) or SIGTERM.\n");
    fflush(stdout);
    exit(ferror(stdout) ? 1 : 0);
}

void usage_error(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "%s: ", progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    print_usage_line(stderr);
    exit(2);
}

/* The optstring for getopt(): the standard letters this stage takes, its own
 * letters (with ':' after those that take an argument), and h. The leading
 * ':' makes getopt report a missing argument as ':' instead of printing. */
static void build_optstring(char *buf, size_t size)
{
    size_t n = 0;

    buf[n++] = ':';
    for (size_t i = 0; i < N_STANDARD; i++) {
        if (!(stage->standard & standard_options[i].flag))
            continue;
        buf[n++] = standard_options[i].opt.letter;
        if (standard_options[i].opt.argname != NULL)
            buf[n++] = ':';
    }
    for (const struct stage_option *o = stage->extra; o && o->letter; o++) {
        /* No stage has options enough to fill the buffer, so no test comes
         * here; the check keeps a longer list from overflowing it. */
        if (n + 3 >= size)
            break;
        buf[n++] = o->letter;
        if (o->argname != NULL)
            buf[n++] = ':';
    }
    buf[n++] = 'h';
    buf[n] = '\0';
}

static bool takes_value(const char *optstring, int c)
{
    const char *p = strchr(optstring + 1, c);

    return p != NULL && p[1] == ':';
}

/*
 * Descriptors 1 and 2 must be open before the program opens anything: one
 * started with stdout closed (as some supervisors start programs) would get
 * its first socket as descriptor 1, and write its narration into it. A
 * closed one is opened on /dev/null. Descriptor 0 is left as it is: lesson
 * 1 closes it on purpose, to see socket() return 0. (fstat, not fcntl: the
 * tests' fault library counts fcntl calls.) Nothing can be reported if this
 * fails, as stderr may be the closed one: the program exits 1.
 */
static void open_stdio(void)
{
    for (int fd = STDOUT_FILENO; fd <= STDERR_FILENO; fd++) {
        struct stat st;
        int null;

        if (fstat(fd, &st) == 0 || errno != EBADF)
            continue;
        null = open("/dev/null", O_WRONLY);
        if (null == -1)
            _exit(1);
        if (null != fd) { /* 0 was closed too, and open() took it */
            if (dup2(null, fd) == -1)
                _exit(1);
            (void)close(null);
        }
    }
}

void options_parse(struct options *o, const struct stage_info *info, int argc,
                   char **argv)
{
    char optstring[64];
    unsigned long value;
    int c;

    open_stdio();
    stage = info;
    progname = info->name;
    *o = (struct options){.addr = DEFAULT_ADDR,
                          .port = DEFAULT_PORT,
                          .backlog = DEFAULT_BACKLOG,
                          .reuseaddr = true};
    build_optstring(optstring, sizeof optstring);
    opterr = 0;
    while ((c = getopt(argc, argv, optstring)) != -1) {
        switch (c) {
        case 'h':
            print_help();
        case ':':
            usage_error("option -%c needs a value", optopt);
        case '?':
            if (optopt == '-')
                usage_error("unknown option: options are single letters, "
                            "not --words");
            if (optopt != 0)
                usage_error("unknown option -%c", optopt);
            /* For a getopt that leaves optopt 0; glibc's and musl's never
             * do, so no test reaches this line. */
            usage_error("unknown option %s", argv[optind - 1]);
        default:
            break;
        }
        /* getopt only returns letters that are in optstring, so each case
         * below is an option this stage takes. */
        if (c == 'a' && (info->standard & OPT_ADDR)) {
            struct sockaddr_storage ss;
            socklen_t len;
            if (addr_parse(optarg, 0, &ss, &len) == -1)
                usage_error("-a %s: not an IPv4 or IPv6 address literal "
                            "(e.g. 127.0.0.1, 0.0.0.0, ::1, ::)",
                            optarg);
            o->addr = optarg;
        } else if (c == 'p' && (info->standard & OPT_PORT)) {
            if (parse_number(optarg, 0, 65535, &value) == -1)
                usage_error("-p %s: a port is a whole number from 0 to 65535",
                            optarg);
            o->port = (unsigned)value;
        } else if (c == 'b' && (info->standard & OPT_BACKLOG)) {
            if (parse_number(optarg, 1, INT_MAX, &value) == -1)
                usage_error("-b %s: a backlog is a whole number from 1 to %d",
                            optarg, INT_MAX);
            o->backlog = (int)value;
        } else if (c == 'q' && (info->standard & OPT_QUIET)) {
            o->quiet = true;
        } else if (c == 's' && (info->standard & OPT_STEP)) {
            o->step = true;
        } else if (c == 'R' && (info->standard & OPT_NOREUSE)) {
            o->reuseaddr = false;
        } else {
            /* POSIX leaves optarg unspecified after a flag: pass NULL. */
            const char *arg = takes_value(optstring, c) ? optarg : NULL;
            const char *why = info->on_extra((char)c, arg, info->ctx);
            if (why != NULL)
                usage_error("-%c%s%s: %s", c, arg ? " " : "", arg ? arg : "",
                            why);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    quiet = o->quiet;
    stepping = o->step;
}

/* ---- addresses --------------------------------------------------------- */

int addr_parse(const char *text, unsigned port, struct sockaddr_storage *ss,
               socklen_t *len)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    /* Every caller passes 0 or a port options_parse has checked, so no
     * test comes here; the check keeps the contract without them. */
    if (port > 65535)
        return -1;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *len = sizeof *sin;
        return 0;
    }
    if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof *sin6;
        return 0;
    }
    return -1;
}

char *addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                  size_t size)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host) != NULL) {
            snprintf(buf, size, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
            return buf;
        }
    } else if (sa->sa_family == AF_INET6 &&
               len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host) != NULL) {
            snprintf(buf, size, "[%s]:%u", host,
                     (unsigned)ntohs(sin6->sin6_port));
            return buf;
        }
    }
    /* The stages only hold IPv4 and IPv6 addresses the kernel filled in,
     * which inet_ntop always formats: no test reaches this line. */
    snprintf(buf, size, "(family %d)", (int)sa->sa_family);
    return buf;
}

/* The tests bind loopback addresses only (never a wildcard, which would
 * listen on every network), and inet_ntop cannot fail on a buffer of
 * ADDR_TEXT_MAX bytes, nor is any other family passed: the wildcard and
 * fallback lines below are left to the learner's own runs. */
unsigned addr_for_clients(const struct sockaddr *sa, char *host, size_t size)
{
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        struct in6_addr a = sin6->sin6_addr;
        if (IN6_IS_ADDR_UNSPECIFIED(&a))
            a = in6addr_loopback;
        if (inet_ntop(AF_INET6, &a, host, (socklen_t)size) == NULL)
            snprintf(host, size, "::1");
        return ntohs(sin6->sin6_port);
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        struct in_addr a = sin->sin_addr;
        if (a.s_addr == htonl(INADDR_ANY))
            a.s_addr = htonl(INADDR_LOOPBACK);
        if (inet_ntop(AF_INET, &a, host, (socklen_t)size) == NULL)
            snprintf(host, size, "127.0.0.1");
        return ntohs(sin->sin_port);
    }
    snprintf(host, size, "?");
    return 0;
}

void ready_line(const char *verb, const struct sockaddr *sa, socklen_t len)
{
    char text[ADDR_TEXT_MAX];

    printf("%s %s\n", verb, addr_format(sa, len, text, sizeof text));
    fflush(stdout);
}

/* ---- step mode ----------------------------------------------------------- */

void step(const char *fmt, ...)
{
    static bool introduced;
    static bool pausing;
    va_list ap;

    if (!stepping)
        return;
    if (!introduced) {
        introduced = true;
        pausing = isatty(STDIN_FILENO);
        printf("[step] PID %ld. In another terminal, watch it between steps:\n"
               "[step]   ls -l /proc/%ld/fd    ss -tanp | grep 'pid=%ld,'\n"
               "[step] (ss lists a socket once it listens or connects; "
               "/proc lists it from socket() on)\n",
               (long)getpid(), (long)getpid(), (long)getpid());
        if (!pausing)
            printf("[step] stdin is not a terminal, so steps are announced "
                   "but not paused for\n");
    }
    printf("[step] next: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (pausing) {
        char line[64];
        printf(" -- press Enter ");
        fflush(stdout);
        /* Read up to the end of the line; EOF (Ctrl-D) stops pausing. */
        while (fgets(line, sizeof line, stdin) != NULL &&
               strchr(line, '\n') == NULL)
            ;
        if (feof(stdin)) {
            pausing = false;
            printf("\n[step] end of input: not pausing any more\n");
        } else if (ferror(stdin)) {
            /* Interrupted by a signal (stage 6 handles SIGINT itself and
             * is about to stop) or a read error: stop pausing, quietly. */
            clearerr(stdin);
            pausing = false;
        }
    } else {
        putchar('\n');
    }
    fflush(stdout);
}

/* ---- signals ------------------------------------------------------------ */

/*
 * The handler does everything itself: it writes its line with write(2) and
 * ends with _exit(2), both async-signal-safe. Because nothing is left for the
 * main flow to check, a signal that lands just before a blocking call (the
 * race a "set a flag, test it, then block" design has) still ends the
 * program at once. Stage 6 replaces this with a graceful shutdown.
 *
 * A handler may touch no object of static storage but lock-free atomics and
 * volatile sig_atomic_t (C11 7.14.1.1), and may call only async-signal-safe
 * functions (POSIX): so its lines are written out beforehand, by
 * exit_on_signals, and handed over as atomic pointers and lengths.
 */
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
               "the signal handler needs lock-free atomic pointers and ints");
static char line_int[96], line_term[96];
static _Atomic(const char *) say_int, say_term;
static atomic_int say_int_len, say_term_len;

static void on_signal(int sig)
{
    const char *line = atomic_load(sig == SIGINT ? &say_int : &say_term);
    int len = atomic_load(sig == SIGINT ? &say_int_len : &say_term_len);

    /* Return value ignored on purpose: nothing could be done about a failed
     * write, and the process ends on the next line. */
    if (len > 0)
        (void)!write(STDOUT_FILENO, line, (size_t)len);
    _exit(0);
}

/* Writes "\nPROGRAM: SIGNAME, exiting\n" into buf (nothing with -q) and
 * hands it to the handler through *say and *len. */
static void prepare_line(char *buf, size_t size, const char *signame,
                         _Atomic(const char *) *say, atomic_int *len)
{
    int n = quiet
                ? 0
                : snprintf(buf, size, "\n%s: %s, exiting\n", progname, signame);

    if (n < 0 || (size_t)n >= size)
        n = 0;
    atomic_store(say, buf);
    atomic_store(len, n);
}

void on_stop_signals(void (*handler)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) == -1)
        die("sigaction SIGINT");
    if (sigaction(SIGTERM, &sa, NULL) == -1)
        die("sigaction SIGTERM");
}

void exit_on_signals(void)
{
    prepare_line(line_int, sizeof line_int, "SIGINT", &say_int, &say_int_len);
    prepare_line(line_term, sizeof line_term, "SIGTERM", &say_term,
                 &say_term_len);
    on_stop_signals(on_signal);
}
