#!/usr/bin/env python3
# pingpong.py: measure the round trip of an echo server. Connects to
# 127.0.0.1:PORT, sends one byte and waits for its echo, 1000 times, then
# prints the average time of one round trip and exits (status 1 if the
# server closes early).
#
# Run it from the repository root:  python3 clients/pingpong.py PORT
import socket
import sys
import time

ROUNDS = 1000

if len(sys.argv) != 2 or not sys.argv[1].isdigit() or not 1 <= int(sys.argv[1]) <= 65535:
    print("usage: python3 clients/pingpong.py PORT   (PORT: 1 to 65535)", file=sys.stderr)
    sys.exit(2)

port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port))
except OSError as e:  # refused, or no route: say so, exit 1
    sys.exit("pingpong.py: connect to 127.0.0.1:%d: %s" % (port, e.strerror))
start = time.monotonic()
for _ in range(ROUNDS):
    s.sendall(b"x")
    if s.recv(1) != b"x":
        print("pingpong.py: the server closed or sent something else",
              file=sys.stderr)
        sys.exit(1)
each = (time.monotonic() - start) / ROUNDS
print("average round trip: %.3f ms" % (each * 1000), flush=True)
