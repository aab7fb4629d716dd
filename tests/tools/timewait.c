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
 * Exit status: 0, or 1 with a message if a call fails.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void fail(const char *what)
{
    perror(what);
    exit(1);
}

int main(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int listener, client, conn, on = 1;
    char byte;

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;

    if ((listener = socket(AF_INET, SOCK_STREAM, 0)) == -1)
        fail("socket");
    if (setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == -1)
        fail("setsockopt SO_REUSEADDR");
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) == -1)
        fail("bind");
    if (listen(listener, 1) == -1)
        fail("listen");
    if (getsockname(listener, (struct sockaddr *)&addr, &len) == -1)
        fail("getsockname");

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
