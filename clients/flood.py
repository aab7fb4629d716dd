#!/usr/bin/env python3
# flood.py: connect to 127.0.0.1:PORT, send as much as the kernel will take
# without blocking (for about 2 s), never read the echo, and stay connected
# for 30 s, so a server that echoes ends up stuck in write().
#
# Run from the repository root:   python3 clients/flood.py PORT
# It prints "port N sent N bytes; reading nothing" once the kernel takes no
# more, then sleeps 30 s and exits (or end it sooner with Ctrl-C).
import socket
import sys
import time

if len(sys.argv) != 2 or not sys.argv[1].isdigit() or not 1 <= int(sys.argv[1]) <= 65535:
    print("usage: python3 clients/flood.py PORT   (PORT: 1 to 65535)", file=sys.stderr)
    sys.exit(2)

port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port))
except OSError as e:  # refused, or no route: say so, exit 1
    sys.exit("flood.py: connect to 127.0.0.1:%d: %s" % (port, e.strerror))
s.setblocking(False)
sent = 0
for _ in range(200):                     # keep trying for about 2 s
    try:
        while True:
            sent += s.send(b"x" * 65536)
    except BlockingIOError:
        time.sleep(0.01)
print("port", s.getsockname()[1], "sent", sent, "bytes; reading nothing",
      flush=True)
try:
    time.sleep(30)
except KeyboardInterrupt:
    pass
