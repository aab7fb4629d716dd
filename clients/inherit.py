#!/usr/bin/env python3
# inherit.py: which settings of a listener does an accepted socket keep?
# Sets one socket option (SO_KEEPALIVE) and one file status flag
# (O_NONBLOCK) on a listener on 127.0.0.1, connects to it, accepts, and
# prints both settings for the listener and for the accepted socket, one
# line each; then exits. Takes no arguments.
#
# Run it from the repository root:  python3 clients/inherit.py
import fcntl
import os
import socket
import sys

if len(sys.argv) != 1:
    print("usage: python3 clients/inherit.py (no arguments)", file=sys.stderr)
    sys.exit(2)

listener = socket.create_server(("127.0.0.1", 0))
listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # an option
listener.setblocking(False)                                     # a flag
client = socket.create_connection(listener.getsockname())
accepted, _ = listener.accept()
for name, s in (("listener", listener), ("accepted", accepted)):
    nonblock = fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
    keepalive = s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    print("%s, descriptor %d: O_NONBLOCK %s, SO_KEEPALIVE %d"
          % (name, s.fileno(), "on" if nonblock else "off", keepalive),
          flush=True)
