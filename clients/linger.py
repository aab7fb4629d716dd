#!/usr/bin/env python3
# linger.py: three connections to 127.0.0.1:PORT, a server that never reads
# (bin/stage3_listen: it never accepts). Each writes until the buffers are
# full, then closes with another SO_LINGER setting: off (the default), on
# with 3 s, on with 0 s; and says how long each close() took.
#
# Run from the repository root:   python3 clients/linger.py PORT
# It prints "connected ..." first, then one line per close, and exits
# (after about 3 s: the second close waits).
import socket
import struct
import sys
import time

if len(sys.argv) != 2 or not sys.argv[1].isdigit() or not 1 <= int(sys.argv[1]) <= 65535:
    print("usage: python3 clients/linger.py PORT   (PORT: 1 to 65535)", file=sys.stderr)
    sys.exit(2)
port = int(sys.argv[1])

first = True
for linger in (None, (1, 3), (1, 0)):
    try:
        s = socket.create_connection(("127.0.0.1", port))
    except OSError as e:  # refused, or no route: say so, exit 1
        sys.exit("linger.py: connect to 127.0.0.1:%d: %s" % (port, e.strerror))
    if first:
        print("connected to 127.0.0.1:%d" % port, flush=True)
        first = False
    s.setblocking(False)
    written = 0
    try:
        while True:                      # until the kernel takes no more
            written += s.send(b"x" * 65536)
    except BlockingIOError:
        pass
    s.setblocking(True)
    if linger:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", *linger))
    port_used = s.getsockname()[1]
    start = time.monotonic()
    s.close()
    print("SO_LINGER %-6s: port %d wrote %d bytes; close() took %.1f s"
          % (linger, port_used, written, time.monotonic() - start),
          flush=True)
