#!/usr/bin/env python3
# trap.py: the busy-loop trap of a server out of descriptors (lesson 6, F38).
# It builds a naive poll() loop of its own: a listener with one client
# waiting in its queue, a descriptor limit of 64 used up to the last one,
# and a loop that calls accept() again every time poll() says the listener
# is readable. accept() fails with EMFILE, the connection stays queued, and
# poll() returns at once, again and again. It counts for SECONDS (default 1),
# prints the counts and the CPU time it used, and exits 0.
#
# Run from the repository root:   python3 clients/trap.py [SECONDS]
import os
import resource
import select
import socket
import sys
import time

if len(sys.argv) > 2 or (len(sys.argv) == 2 and not sys.argv[1].isdigit()):
    print("usage: python3 clients/trap.py [SECONDS]", file=sys.stderr)
    sys.exit(2)
seconds = int(sys.argv[1]) if len(sys.argv) == 2 else 1

listener = socket.create_server(("127.0.0.1", 0))
listener.setblocking(False)
client = socket.create_connection(listener.getsockname())  # waits in the queue
resource.setrlimit(resource.RLIMIT_NOFILE,
                   (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
spare = []
try:
    while True:                          # use up every descriptor left
        spare.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print("descriptors used up:", e.strerror, flush=True)

p = select.poll()
p.register(listener, select.POLLIN)
wakeups = failures = 0
err = "none"
start = time.monotonic()
cpu0 = sum(os.times()[:2])
while time.monotonic() - start < seconds:
    if p.poll(1000):                     # meant to sleep up to 1 s
        wakeups += 1
        try:
            listener.accept()
        except OSError as e:             # EMFILE: the client stays queued
            failures += 1
            err = e.strerror
print("in %d s: poll() returned %d times, accept() failed %d times (%s)"
      % (seconds, wakeups, failures, err), flush=True)
print("CPU time used: %.2f s" % (sum(os.times()[:2]) - cpu0), flush=True)
