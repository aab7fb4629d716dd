#!/usr/bin/env python3
# accepter.py: a server that listens at once but accepts only when told.
# It listens on 127.0.0.1 (a port the kernel picks) with a small backlog,
# prints "listening on 127.0.0.1:PORT", then waits until you press Enter (or
# its input ends) before it calls accept(). From then on it accepts every
# connection, prints one line for each and keeps it open (it never reads or
# closes). Lesson 3, exercise 1: watch a full queue drain.
#
# Run it:  python3 clients/accepter.py [BACKLOG]     (BACKLOG: default 1)
# It ends on Ctrl-C, saying how many connections it accepted.
import signal
import socket
import sys


def main():
    args = sys.argv[1:]
    if len(args) > 1 or (args and not (args[0].isdigit() and int(args[0]) >= 1)):
        print("usage: accepter.py [BACKLOG]   (BACKLOG: 1 or more, default 1)",
              file=sys.stderr)
        return 2
    backlog = int(args[0]) if args else 1
    # Ctrl-C (SIGINT) ends it even when a shell started it in the background,
    # where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server = socket.create_server(("127.0.0.1", 0), backlog=backlog)
    print("listening on 127.0.0.1:%d" % server.getsockname()[1], flush=True)
    print("backlog %d: press Enter to start accepting" % backlog, flush=True)
    kept = []  # the accepted sockets, kept open so each client stays connected
    try:
        sys.stdin.readline()
        print("accepting from now on", flush=True)
        while True:
            conn, peer = server.accept()
            kept.append(conn)
            print("accepted %s:%d (%d so far)" % (peer[0], peer[1], len(kept)),
                  flush=True)
    except KeyboardInterrupt:
        print("stopped with %d connections accepted" % len(kept), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
