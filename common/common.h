/*
 * common.h - the one small helper every stage shares.
 *
 * Nothing in here is what a lesson is about: the lifecycle calls (socket,
 * setsockopt, bind, listen, accept, fcntl, poll) stand in each stage's own
 * file. This helper only does the chores around them: reporting errors with
 * the errno's name, parsing the command line, turning addresses into text and
 * back, narrating for the learner, step mode, and ending on SIGINT/SIGTERM.
 *
 * Conventions: functions that can fail for a caller's reason return 0 on
 * success and -1 on failure and never exit (the caller decides); only the
 * die and usage functions end the process, and they say so in their names.
 */
#ifndef COMMON_H
#define COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#if defined(__GNUC__) || defined(__clang__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

#if __STDC_VERSION__ >= 201112L
#define NORETURN _Noreturn
#else
#define NORETURN
#endif

/* Room for the longest "[IPv6%scope]:65535" text, with its NUL. */
#define ADDR_TEXT_MAX 80

/* The defaults CONTRIBUTING.md promises (part 1, Options). */
#define DEFAULT_ADDR    "127.0.0.1"
#define DEFAULT_PORT    6969
#define DEFAULT_BACKLOG 128

/* Which of the standard options a stage takes (OR them together). */
enum {
    OPT_ADDR = 1 << 0,    /* -a ADDR */
    OPT_PORT = 1 << 1,    /* -p PORT */
    OPT_BACKLOG = 1 << 2, /* -b BACKLOG */
    OPT_QUIET = 1 << 3,   /* -q */
    OPT_STEP = 1 << 4,    /* -s: step mode */
    OPT_NOREUSE = 1 << 5  /* -R: do not set SO_REUSEADDR (for the lesson) */
};

/* An option of a stage's own, described for the parser and for -h. */
struct stage_option {
    char letter;         /* the option letter; 0 ends a list */
    const char *argname; /* e.g. "MAXCLIENTS", or NULL for a flag */
    const char *help;    /* one line for -h */
};

/*
 * Called for each of a stage's own options with its argument (NULL for a
 * flag); returns NULL when the value is fine, or a one-line reason why not.
 */
typedef const char *(*stage_option_fn)(char letter, const char *arg, void *ctx);

/* What a stage tells the parser about itself. */
struct stage_info {
    const char *name;                 /* program name, e.g. "stage2_bind" */
    const char *summary;              /* one line: what the program does */
    unsigned standard;                /* OPT_* flags it takes */
    const struct stage_option *extra; /* its own options, or NULL */
    stage_option_fn on_extra;         /* handles them; NULL if none */
    void *ctx;                        /* handed to on_extra */
};

/* The standard options after parsing; defaults where not given. */
struct options {
    const char *addr; /* -a, as typed; checked to be an IPv4/IPv6 literal */
    unsigned port;    /* -p, 0..65535 */
    int backlog;      /* -b, 1..INT_MAX */
    bool quiet;       /* -q */
    bool step;        /* -s */
    bool reuseaddr;   /* true unless -R */
};

/* Parses argv into *o; on -h prints usage to stdout and exits 0; on bad
 * usage prints a one-line reason and the usage line to stderr and exits 2. */
void options_parse(struct options *o, const struct stage_info *info, int argc,
                   char **argv);

/* Prints the reason (printf-style) and the usage line to stderr, exits 2.
 * For checks a stage makes after options_parse (e.g. two options at odds). */
NORETURN void usage_error(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Reads a whole decimal number in [min, max] from text into *out; returns 0,
 * or -1 for anything else (signs, spaces, trailing junk, out of range). */
int parse_number(const char *text, unsigned long min, unsigned long max,
                 unsigned long *out);

/* The errno's symbolic name, e.g. "EADDRINUSE"; "errno N" text for one this
 * table does not know (written into a static buffer). */
const char *errno_name(int err);

/* Prints "PROGRAM: WHAT: ENAME (strerror text)" to stderr, WHAT formatted
 * printf-style, for the current errno, and exits 1. For setup steps. */
NORETURN void die(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* The same line as die(), for errno value err, but returns: for an error that
 * ends one connection and not the program. Leaves errno as it found it. */
void warn_errno(int err, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* After bind() failed with err, narrates what that errno usually means and
 * what to try (for EADDRINUSE, EACCES, EADDRNOTAVAIL; nothing for others). */
void bind_hint(int err, const char *addr, unsigned port);

/* Fills *ss and *len from an IPv4 or IPv6 literal and a port; returns 0, or
 * -1 if text is not such a literal (or port > 65535). */
int addr_parse(const char *text, unsigned port, struct sockaddr_storage *ss,
               socklen_t *len);

/* Writes "1.2.3.4:80" or "[::1]:80" for sa into buf (at least ADDR_TEXT_MAX
 * bytes) and returns buf; an unknown family gives "(family N)". */
char *addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                  size_t size);

/* Writes the host text a client on this machine would connect to, for a
 * socket bound at sa (the loopback address in place of a wildcard), into
 * host (at least ADDR_TEXT_MAX bytes), and returns the port. */
unsigned addr_for_clients(const struct sockaddr *sa, char *host, size_t size);

/* Prints "VERB ADDR:PORT" (e.g. "listening on 127.0.0.1:6969") to stdout and
 * flushes at once, quiet or not: scripts and tests wait for this line. */
void ready_line(const char *verb, const struct sockaddr *sa, socklen_t len);

/* Prints a line of narration to stdout and flushes, unless -q was given. */
void narrate(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* True when narration is on (no -q): for a stage that narrates in a loop. */
bool narrating(void);

/* For an event loop, which must never wait on its own output: from now on
 * narrate() only queues its line (64 KiB at most; a line that does not fit
 * is dropped and counted), and narration_flush() writes it. */
void narration_batch(void);

/* Writes queued narration, as much as stdout takes now without waiting, in
 * one write() at most; once all is written, queues a line saying how many
 * lines were dropped, if any. Returns true while some is still queued. */
bool narration_flush(void);

/* At the end of an event loop: writes what is queued, waiting up to
 * max_ms in all for stdout to take it, then drops the rest. */
void narration_end(int max_ms);

/* Step mode (-s): announces the next step and, when stdin is a terminal,
 * waits for Enter; otherwise only announces it. Does nothing without -s. */
void step(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Installs handler for SIGINT and SIGTERM (no SA_RESTART: a blocked call
 * they interrupt fails with EINTR); exits 1, naming the call, if it cannot. */
void on_stop_signals(void (*handler)(int));

/* Installs handlers so that SIGINT and SIGTERM end the program at once with
 * status 0, after a line of narration. Safe however late the signal comes:
 * the handler itself calls _exit(), so no check can miss it. */
void exit_on_signals(void);

#endif
