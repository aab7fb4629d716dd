/*
 * reset - connects, sends, and then resets the connection instead of closing
 * it: the client that vanishes mid-conversation, which a server must survive.
 *
 * usage: reset HOST PORT [BYTES [close]]
 *
 * Connects to HOST PORT (an IPv4 or IPv6 literal), writes up to BYTES bytes
 * (default 0) without reading anything back (stopping early, never blocking,
 * once the socket buffers are full), then closes with SO_LINGER set
 * to {on, 0 s}: the kernel throws away what is unsent and sends RST instead
 * of FIN. The server then sees ECONNRESET from read(), or EPIPE/ECONNRESET
 * from a write() of an echo nobody will read.
 *
 * With "close", it ends with a plain close() instead: the client that hangs
 * up without reading its echo. Its kernel answers the echo with RST, and the
 * server's next write() fails with EPIPE (and raises SIGPIPE, which would
 * kill a server that did not ignore it). For that, BYTES must be more than
 * the server reads at once, yet small enough that all of it and the FIN reach
 * the server before its echo does (48 KiB does on loopback).
 *
 * Exit status: 0, 1 if a call fails, 2 for bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct addrinfo hints, *ai;
    struct linger lg = {1, 0};
    static char chunk[65536];
    long long left = 0;
    int fd, rc;

    if (argc < 3 || argc > 5 || (argc == 5 && strcmp(argv[4], "close") != 0)) {
        fprintf(stderr,
                "usage: reset HOST PORT [BYTES [close]]\n"
                "connects, sends up to BYTES (default 0) without reading, "
                "then resets the\n"
                "connection (SO_LINGER {on, 0}); with 'close', closes it "
                "instead, unread echo\n"
                "and all\n");
        return 2;
    }
    if (argc >= 4)
        left = strtoll(argv[3], NULL, 10);
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if ((rc = getaddrinfo(argv[1], argv[2], &hints, &ai)) != 0) {
        fprintf(stderr, "reset: %s %s: %s\n", argv[1], argv[2],
                gai_strerror(rc));
        return 2;
    }
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd == -1 || connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
        perror("reset: connect");
        return 1;
    }
    freeaddrinfo(ai);
    memset(chunk, 'x', sizeof chunk);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1) {
        perror("reset: fcntl");
        return 1;
    }
    while (left > 0) {
        size_t want =
            left < (long long)sizeof chunk ? (size_t)left : sizeof chunk;
        ssize_t n = write(fd, chunk, want);
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n == -1) {
            perror("reset: write");
            return 1;
        }
        left -= n;
    }
    if (argc < 5 &&
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == -1) {
        perror("reset: setsockopt SO_LINGER");
        return 1;
    }
    if (close(fd) == -1) {
        perror("reset: close");
        return 1;
    }
    return 0;
}
