/*
 * server.h - the body every stage 6 program shares.
 *
 * Stage 6 is one echo server with three ways to wait: stage6_poll.c (the
 * lesson), stage6_select.c and stage6_epoll.c. Each of those files holds its
 * main() and its loop, and knows one readiness API; everything else is
 * written once, in server.c: the listening socket (the steps of stages 1 to
 * 5), the clients and their output buffers, echo with backpressure and
 * half-close, accept with the reserve descriptor, the idle timeout, the
 * self-pipe for signals and the shutdown. The split is libuv's and Redis's:
 * the body holds the connections; the backend only waits.
 *
 * Read stage6_poll.c first, then this header, then server.c in the order
 * its sections come.
 */
#ifndef SERVER_H
#define SERVER_H

#include "common.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

/* The most a client may be owed: at this many bytes unsent, the server stops
 * reading from it until it takes some (backpressure, F36). */
#define OUT_CAP 65536
/* The one buffer every read() goes into, shared by all clients. */
#define READ_SIZE 65536
/* No deadline: the wait may sleep until something is ready. */
#define NO_DEADLINE LLONG_MAX

/* What a client wants next, from its state alone: the readiness API is told
 * whenever this changes. */
enum { WANT_READ = 1, WANT_WRITE = 2 };

/* What the readiness API said about a client's descriptor, in the same words
 * for poll(), select() and epoll. */
enum { CAN_READ = 1, CAN_WRITE = 2, HUNG_UP = 4 };

/*
 * One connected client. It costs little while idle: this struct, one
 * pointer, and the readiness API's entry. Output is kept only when a write
 * was short: out is NULL while nothing is owed; otherwise it holds OUT_CAP
 * bytes and out[start..end) is what the client is owed, oldest first. It is
 * freed as soon as it drains.
 */
struct client {
    int fd;
    int wishes;    /* WANT_READ | WANT_WRITE: what it wants now */
    int watched;   /* what the readiness API was last told (the backend's) */
    unsigned slot; /* its index in server.clients */
    bool eof;      /* the client shut down its sending side: no more
                      reading; close once nothing is owed */
    const char *ending;    /* why it is to be closed after this round (for the
                              narration); NULL while it is being served */
    char *out;             /* NULL, or OUT_CAP bytes: see above */
    unsigned start, end;   /* out[start..end) is owed; 0 while out is NULL */
    long long echoed;      /* bytes written back, for the narration */
    long long last_active; /* ms (CLOCK_MONOTONIC) it last moved data, -t */
    struct client *older;  /* -t: the clients in order of last_active, */
    struct client *newer;  /*     oldest first (server.oldest) */
    struct client *next_done; /* the list of clients ending this round */
    char peer[ADDR_TEXT_MAX]; /* "127.0.0.1:54012", for the narration */
};

/* Everything the loop works on. */
struct server {
    int listener;
    struct sockaddr_storage addr; /* where it listens (getsockname) */
    socklen_t addrlen;
    int wake;    /* the self-pipe's read end: readable after a signal */
    int reserve; /* /dev/null, held for the EMFILE cure; -1 if lost */
    struct client **clients; /* clients[0..count), each at its slot */
    size_t count, max;
    long long idle_ms;      /* -t in ms; 0: off */
    long long paused_until; /* the listener is not watched before then */
    struct client *oldest, *newest; /* -t: by last_active */
    struct client *done;            /* ending this round, closed after it */
    bool nodelay;                   /* set TCP_NODELAY on clients (no -N) */
    char *inbuf; /* READ_SIZE bytes: every read() lands here first */
};

/* What a stage 6 program tells the body about itself. */
struct program {
    const char *name; /* "stage6_poll" */
    const char *api;  /* "poll()": what the loop sleeps in, for -h and
                         the narration */
    int fd_ceiling;   /* descriptors must stay below this (select()'s
                         FD_SETSIZE); 0: no ceiling */
    int extra_fds;    /* descriptors it opens after server_start() */
};

/* ---- what each stage 6 program provides: its readiness API ------------- */

/* Tells the readiness API what c wants now (c->wishes) and where it is
 * (c->slot); called for a new client, whenever its wishes change and when
 * it moves to another slot. Returns 0, or -1 when c cannot be watched (then
 * it is closed at once; the function has said why). */
int watch(struct server *srv, struct client *c);

/* c is about to be closed: the readiness API forgets it. */
void unwatch(struct server *srv, struct client *c);

/* ---- what the body provides ---------------------------------------------- */

/* Parses the options, then takes the steps of stages 1 to 5 (socket,
 * SO_REUSEADDR, bind, listen, O_NONBLOCK), the self-pipe, the reserve
 * descriptor and the client table. Exits 1 (naming the call) or 2 (usage)
 * on failure. Prints no readiness line: see server_ready. */
void server_start(struct server *srv, const struct program *prog, int argc,
                  char **argv);

/* Prints the readiness line and what to try, once the program's own setup
 * has succeeded too: the last thing said before the loop. */
void server_ready(const struct server *srv, const struct program *prog);

/* Milliseconds on CLOCK_MONOTONIC, which does not jump when someone sets the
 * date: deadlines measured on it stay right. */
long long now_ms(void);

/* Before each wait: writes the narration the round made (one write() at
 * most, never waiting), and returns the nearest moment the loop must wake
 * for even if nothing is ready (an idle client's -t deadline, the end of a
 * listener pause, a retry for narration stdout could not take yet), or
 * NO_DEADLINE. */
long long prepare_wait(const struct server *srv, long long now);

/* A wait's timeout in ms for a deadline: -1 for none, 0 if it has passed. */
int timeout_ms(long long deadline, long long now);

/* False while the listener rests (out of descriptors with no reserve left):
 * it must not be watched then, or the loop would spin on it. */
bool accepting(const struct server *srv, long long now);

/* The wait returned -1: EINTR (a signal, whose byte now waits in the
 * self-pipe) is fine, and the loop goes round; anything else exits 1,
 * naming the call. */
void wait_failed(const char *call);

/* After the wait saw the self-pipe readable: empties it and returns the last
 * signal number the handler wrote, or 0 if there was nothing after all. */
int take_signal(int fd);

/* One client's turn, given what the readiness API said (CAN_READ,
 * CAN_WRITE, HUNG_UP): owed bytes first, then reads echoed at once, within a
 * per-round budget. Never waits. Tells the API when c's wishes change; puts
 * c on the list to close after the round when it is finished. */
void serve(struct server *srv, struct client *c, int ready, long long now);

/* -t: puts every client idle for too long on the list to close. Looks only
 * at the oldest ones: clients are kept in order of last activity. */
void expire_idle(struct server *srv, long long now);

/* Closes and frees the clients put on the list this round, after the scan.
 * The last client fills the hole each one leaves (watch() is told). */
void close_finished(struct server *srv);

/* Takes connections waiting in the queue (up to ACCEPTS_PER_ROUND), each
 * non-blocking and watched; one over the -m limit is closed at once. */
void accept_all(struct server *srv, long long now);

/* SIGINT or SIGTERM: stops accepting, closes every client, frees the body's
 * memory, says so. */
void server_stop(struct server *srv, int sig);

#endif
