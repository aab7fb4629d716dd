#!/usr/bin/env python3
# keepalive.py: connect to 127.0.0.1:PORT with TCP keepalive on: the first
# probe after 2 s of silence, then one every 1 s, and 3 unanswered probes
# mean the peer is dead. Then wait for data that never comes, and say how
# the wait ended.
#
# Run from the repository root:   python3 clients/keepalive.py PORT
# It prints "connected from port N" as soon as it is connected; it ends when
# recv() returns (a line says how: end of stream, data, or the error, e.g.
# ETIMEDOUT once the probes go unanswered), or with Ctrl-C.
import socket
import sys
import time

if len(sys.argv) != 2 or not sys.argv[1].isdigit() or not 1 <= int(sys.argv[1]) <= 65535:
    print("usage: python3 clients/keepalive.py PORT   (PORT: 1 to 65535)", file=sys.stderr)
    sys.exit(2)

port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port))
except OSError as e:  # refused, or no route: say so, exit 1
    sys.exit("keepalive.py: connect to 127.0.0.1:%d: %s" % (port, e.strerror))
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
print("connected from port", s.getsockname()[1], flush=True)
start = time.monotonic()
try:
    data = s.recv(1)
    print("recv() returned %r after %.1f s" % (data, time.monotonic() - start),
          flush=True)
except KeyboardInterrupt:
    pass
except OSError as e:
    print("recv() failed after %.1f s: %s" % (time.monotonic() - start, e),
          flush=True)
