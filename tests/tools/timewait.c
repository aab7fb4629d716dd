/*
 * timewait - leaves a connection in TIME_WAIT on a server port, the way a
 * server that closed first leaves one, and prints that port.
 *
 * usage: timewait
 *
 * It plays both ends on 127.0.0.1: a listener with SO_REUSEADDR (as the
 * stages set it) accepts one connection from its own client, the server side
 * closes first, then the client. The server side of the connection is now in
 * TIME_WAIT for 2 x MSL (60 s on Linux) on the port printed, with nobody
 * listening there: exactly what a restarted server finds. The tests use it
 * for CURRICULUM F11: bind() on that port fails with EADDRINUSE without
 * SO_REUSEADDR and succeeds with it.
 *
 * The port is one no other TCP socket of this machine has records of (in
 * /proc/net/tcp and tcp6), so that `ss` shows only this connection's: a
 * port handed out by bind() with port 0 may still have TIME_WAIT records
 * of an earlier connection to a server that had it. A port with records is
 * kept bound while another is taken (at most MAX_TRIES).
 *
 * Exit status: 0, or 1 with a message if a call fails.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_TRIES 20

static void fail(const char *what)
{
    perror(what);
    exit(1);
}

/* True when a line of FILE (/proc/net/tcp or tcp6) names port at either
 * end: "sl local_address rem_address st ...", addresses as HEX:PORT. */
static bool port_in(const char *file, unsigned port)
{
    char line[512], local[80], remote[80];
    bool found = false;
    FILE *f = fopen(file, "r");

    if (f == NULL)
        return false; /* no IPv6 here, say: nothing to find */
    while (!found && fgets(line, sizeof line, f) != NULL) {
        const char *a, *b;
        if (sscanf(line, "%*s %79s %79s", local, remote) != 2)
            continue;
        a = strrchr(local, ':');
        b = strrchr(remote, ':');
        found = (a != NULL && strtoul(a + 1, NULL, 16) == port) ||
                (b != NULL && strtoul(b + 1, NULL, 16) == port);
    }
    fclose(f);
    return found;
}

int main(void)
{
    struct sockaddr_in addr;
    socklen_t len;
    int listener, client, conn, on = 1, held[MAX_TRIES], nheld = 0;
    char byte;

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;

    for (;;) {
        unsigned port;
        if ((listener = socket(AF_INET, SOCK_STREAM, 0)) == -1)
            fail("socket");
        if (setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) ==
            -1)
            fail("setsockopt SO_REUSEADDR");
        addr.sin_port = 0;
        if (bind(listener, (struct sockaddr *)&addr, sizeof addr) == -1)
            fail("bind");
        len = sizeof addr;
        if (getsockname(listener, (struct sockaddr *)&addr, &len) == -1)
            fail("getsockname");
        port = ntohs(addr.sin_port);
        if (nheld == MAX_TRIES || (!port_in("/proc/net/tcp", port) &&
                                   !port_in("/proc/net/tcp6", port)))
            break;
        held[nheld++] = listener; /* keep it, so the next port differs */
    }
    while (nheld > 0)
        if (close(held[--nheld]) == -1)
            fail("close");
    if (listen(listener, 1) == -1)
        fail("listen");

    if ((client = socket(AF_INET, SOCK_STREAM, 0)) == -1)
        fail("socket");
    if (connect(client, (struct sockaddr *)&addr, sizeof addr) == -1)
        fail("connect");
    if ((conn = accept(listener, NULL, NULL)) == -1)
        fail("accept");
    if (close(listener) == -1)
        fail("close listener");

    /* The server side closes first: it is the one that will wait in
     * TIME_WAIT. The client sees end of stream, then closes too. */
    if (close(conn) == -1)
        fail("close server side");
    if (read(client, &byte, 1) != 0)
        fail("read end of stream");
    if (close(client) == -1)
        fail("close client side");

    printf("%u\n", (unsigned)ntohs(addr.sin_port));
    return fflush(stdout) == 0 ? 0 : 1;
}
