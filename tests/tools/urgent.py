#!/usr/bin/env python3
"""urgent.py PORT: sends "abc", then "X" as urgent data (MSG_OOB), then "def"
to 127.0.0.1:PORT, half-closes, and prints what comes back (the echo server
should return "abcXdef": with SO_OOBINLINE the urgent byte stays in the
stream, in its place). Each send waits for the echo of the one before, so
the three arrive as three segments. Exits 1 if nothing comes back in 10 s.
"""
import socket
import sys


def read_until(sock, want, got):
    while len(got) < want:
        chunk = sock.recv(64)
        if not chunk:
            break
        got += chunk
    return got


def main():
    port = int(sys.argv[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        got = b""
        sock.sendall(b"abc")
        got = read_until(sock, 3, got)
        sock.send(b"X", socket.MSG_OOB)
        got = read_until(sock, 4, got)
        sock.sendall(b"def")
        sock.shutdown(socket.SHUT_WR)
        while True:
            chunk = sock.recv(64)
            if not chunk:
                break
            got += chunk
    print(got.decode("ascii", "replace"))
    return 0 if got else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as err:
        print("urgent.py:", err, file=sys.stderr)
        sys.exit(1)
