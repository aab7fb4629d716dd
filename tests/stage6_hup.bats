#!/usr/bin/env bats
# stage6_poll and a half-closed client under macOS's poll() (CURRICULUM F37).
#
# When a client shuts down its sending side, Linux's poll() reports POLLIN
# (end of stream) and POLLHUP only once both directions are shut. macOS's
# poll(), built on kqueue, reports POLLHUP at once, without POLLOUT, on a
# descriptor watched for input. The rule these tests hold the server to: a
# client still owed bytes is not closed because of POLLHUP; it is closed when
# the bytes are delivered, or when a write fails.
#
# The preload library build/tools/libbsdpoll.so (tests/fault/bsdpoll.c, which
# says what it emulates and from which sources) makes Linux's poll() answer
# as macOS's does. Only stage6_poll: select() has no POLLHUP, and epoll is
# not poll(). tests/stage6.bats runs the half-close tests on Linux's poll().

load helpers

PROG=stage6_poll
# Bytes flood sends in all: 32 clients, 32 KiB, 64 KiB, ... 1 MiB.
FLOOD_TOTAL=17301504

# need_python3: skips a test that talks to the server through python3.
need_python3() {
    command -v python3 >/dev/null 2>&1 || skip "needs python3"
}

# bsdpoll_env PROGRAM: the environment (env's arguments) that preloads the
# stand-in for PROGRAM alone; a sanitizer build wants its runtime first in
# the list of libraries, and works second once told not to check.
bsdpoll_env() {
    echo "LD_PRELOAD=$TOOLS/libbsdpoll.so" "BSDPOLL_PROGRAM=$1" \
        "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
}

# start_macos_server PROGRAM [ARGS...]: start_server, with PROGRAM's poll()
# answering as macOS's, and a check that the library is in the process.
start_macos_server() {
    local prog=$1 dir=$BATS_TEST_TMPDIR/macos
    shift
    mkdir -p "$dir"
    printf '#!/bin/sh\nexec env %s "%s" "$@"\n' \
        "$(bsdpoll_env "$prog")" "$BIN/$prog" >"$dir/$prog"
    chmod +x "$dir/$prog"
    BIN=$dir start_server "$prog" "$@"
    grep -q libbsdpoll.so "/proc/$SERVER_PID/maps" ||
        { echo "the stand-in is not loaded in $prog"; return 1; }
}

# poll_probe MS [ENV...]: python3 (run by env with ENV) makes a TCP
# connection to itself, half-closes the client side, and polls the server
# side, printing what each poll() reports, and "at once" when it reported
# something within a second:
#   POLLIN|POLLOUT -> ...; POLLOUT -> ...; POLLPRI -> ...
# The POLLPRI-only poll() waits MS ms: on Linux it sees nothing, and waits
# them out; macOS's read filter is ready at once.
poll_probe() {
    local ms=$1
    shift
    timeout "$WAIT_LIMIT" env "$@" python3 - "$ms" <<'PY'
import select, socket, sys, time

NAMES = [(select.POLLIN, "POLLIN"), (select.POLLPRI, "POLLPRI"),
         (select.POLLOUT, "POLLOUT"), (select.POLLHUP, "POLLHUP")]

def ask(sock, events, ms):
    p = select.poll()
    p.register(sock, events)
    t = time.monotonic()
    got = p.poll(ms)
    took = time.monotonic() - t
    revents = got[0][1] if got else 0
    if revents == 0:
        return "nothing"
    text = "|".join(n for bit, n in NAMES if revents & bit)
    return text + (" at once" if took < 1 else f" after {took:.1f} s")

with socket.create_server(("127.0.0.1", 0)) as lst:
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    cli.shutdown(socket.SHUT_WR)
    wait = select.poll()
    wait.register(srv, select.POLLIN)
    wait.poll(5000)  # the FIN is in
    print("POLLIN|POLLOUT ->", ask(srv, select.POLLIN | select.POLLOUT, 5000)
          + "; POLLOUT ->", ask(srv, select.POLLOUT, 5000)
          + "; POLLPRI ->", ask(srv, select.POLLPRI, int(sys.argv[1])))
PY
}

@test "stage6_hup: the stand-in is in effect: a half-closed socket polled for input reports POLLHUP without POLLOUT, at once" {
    need_python3
    run poll_probe 300
    [[ $status -eq 0 ]] || { echo "Linux: exit $status: $output"; return 1; }
    echo "Linux:    $output"
    [[ $output == "POLLIN|POLLOUT -> POLLIN|POLLOUT at once; POLLOUT -> POLLOUT at once; POLLPRI -> nothing" ]]
    run poll_probe 5000 "LD_PRELOAD=$TOOLS/libbsdpoll.so"
    [[ $status -eq 0 ]] || { echo "macOS: exit $status: $output"; return 1; }
    echo "macOS:    $output"
    [[ $output == "POLLIN|POLLOUT -> POLLIN|POLLHUP at once; POLLOUT -> POLLOUT at once; POLLPRI -> POLLHUP at once" ]]
}

# shellcheck disable=SC2154 # stderr is set by Bats run --separate-stderr
@test "stage6_hup F37: 32 clients send 32 KiB to 1 MiB and half-close before reading: under macOS's poll(), every byte comes back" {
    start_macos_server "$PROG" -q
    # Each client (small receive buffer) sends all it has without reading,
    # shuts down its sending side, and only then reads: the server meets
    # POLLHUP while it still holds echo for most of them.
    run_load flood -s -c 32 -b 1048576 -T 30
    [[ $output == *"sent $FLOOD_TOTAL of $FLOOD_TOTAL bytes without reading"* ]] ||
        { echo "load exit $status: $output $stderr"; return 1; }
    [[ $status -eq 0 && $output == *"verified $FLOOD_TOTAL bytes"* ]] ||
        { echo "load exit $status: $output $stderr"; return 1; }
}

# full_window: python3 connects (small receive buffer), sends 4 KiB at a
# time without reading, and after each waits for the server to have read it
# all and to sleep in poll() with nothing in flight (ss, /proc); it stops
# once the server owes bytes with its send buffer full: the client's window
# is full too, and the server's write() has said EAGAIN. Then it half-closes,
# waits for the server to wake for the FIN and sleep again, reads to end of
# stream, and checks every byte. Prints what it sent, what the server owed
# then, and what came back.
full_window() {
    timeout 30 python3 - "$PORT" "$SERVER_PID" <<'PY'
import fcntl, os, re, socket, struct, subprocess, sys, termios, time

port, pid = int(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 20

def fail(why):
    print(why)
    sys.exit(1)

def queue(sock, request):
    return struct.unpack("i", fcntl.ioctl(sock, request, b"\0" * 4))[0]

def server_side(cport):
    """The server's socket (ss): Recv-Q, Send-Q, bytes in flight, and
    whether its send buffer is full (what it holds >= its size)."""
    out = subprocess.run(
        ["ss", "-Htnmi", "state", "established",
         f"( sport = :{port} and dport = :{cport} )"],
        capture_output=True, text=True, check=True).stdout
    fields = out.split()
    unacked = re.search(r"\bunacked:(\d+)", out)
    mem = re.search(r"\btb(\d+),.*\bw(\d+)", out)
    return (int(fields[0]), int(fields[1]), int(unacked[1]) if unacked else 0,
            int(mem[2]) >= int(mem[1]))

def server_asleep():
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"

def server_sleeps():
    """How many times the server has gone to sleep (in poll(), here)."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"voluntary_ctxt_switches:\s*(\d+)", f.read())[1])

c = socket.socket()
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
c.connect(("127.0.0.1", port))
cport = c.getsockname()[1]
sent = bytearray()
owed = 0
while owed <= 0:
    piece = os.urandom(4096)
    c.sendall(piece)
    sent += piece
    # Settled: the server has read everything, sleeps, nothing in flight.
    while True:
        recvq, sendq, unacked, full = server_side(cport)
        if (recvq == 0 and unacked == 0 and queue(c, termios.TIOCOUTQ) == 0
                and server_asleep()):
            break
        if time.monotonic() > deadline:
            fail(f"the server never settled after {len(sent)} bytes")
        time.sleep(0.01)
    # What the server read and holds, neither in its send buffer nor ours;
    # with the buffer full, it is not a write still on its way.
    if full:
        owed = len(sent) - sendq - queue(c, termios.FIONREAD)
    if time.monotonic() > deadline:
        fail(f"the server owed nothing after {len(sent)} bytes")
sleeps = server_sleeps()
c.shutdown(socket.SHUT_WR)
print(f"half-closed after {len(sent)} bytes, the server owing {owed}")
# Read only once the server has woken for the FIN and slept again: what it
# did then, it did with its send buffer full.
while server_sleeps() == sleeps or not server_asleep():
    if time.monotonic() > deadline:
        fail("the server did not take its turn after the half-close")
    time.sleep(0.01)
c.settimeout(max(deadline - time.monotonic(), 1))
got = bytearray()
try:
    while chunk := c.recv(65536):
        got += chunk
except OSError as e:
    print(f"read: {e}")
if got != sent:
    same = next((i for i, (a, b) in enumerate(zip(got, sent)) if a != b),
                min(len(got), len(sent)))
    fail(f"got {len(got)} of {len(sent)} bytes back "
         f"({len(sent) - len(got)} lost); the first {same} are right")
print(f"got all {len(got)} bytes back, the same, then end of stream")
PY
}

@test "stage6_hup F37: a client half-closes while the server owes it bytes and cannot write (full window), then reads: every byte comes back, on Linux's poll() and on macOS's" {
    need_python3
    start_server "$PROG" -q
    run full_window
    echo "Linux: $output"
    [[ $status -eq 0 ]]
    stop_process "$SERVER_PID"
    start_macos_server "$PROG" -q
    run full_window
    echo "macOS: $output"
    [[ $status -eq 0 ]]
}
