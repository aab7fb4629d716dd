#!/usr/bin/env bats
# stage4_accept: an iterative, blocking echo server (CURRICULUM F21 to F29,
# and F46 through TCP_NODELAY).

load helpers

# client_port: the port of the first client (on fd 4), from the narration.
client_port() {
    local line
    line=$(grep -m 1 -E '^client 127\.0\.0\.1:[0-9]+ connected on fd 4;' "$SERVER_OUT")
    line=${line#client 127.0.0.1:}
    echo "${line%% *}"
}

# keepalive_timer: what ss says of the timer on the server's side of the
# first client's connection (Bats run: in output).
keepalive_timer() {
    run ss -Htno state established "sport = :$PORT and dport = :$(client_port)"
}

# assert_keepalive_timer IDLE: ss shows a keepalive timer on the server's
# side, due within IDLE seconds (the system-wide default is two hours).
# (Some versions of ss write its seconds as "6.984ms".)
assert_keepalive_timer() {
    keepalive_timer
    [[ $output =~ timer:\(keepalive,([0-9]+)(\.[0-9]+)?(sec|ms), ]] ||
        { echo "ss: $output"; return 1; }
    ((BASH_REMATCH[1] < $1)) || { echo "ss: $output"; return 1; }
}

# in_server_net COMMAND [ARGS...]: runs COMMAND in the server's network
# namespace (for a server started in one of its own).
in_server_net() {
    nsenter --net="/proc/$SERVER_PID/ns/net" "$@"
}

@test "stage4: -h prints the usage to stdout and exits 0, listing -k, -L and -N" {
    assert_help stage4_accept
    [[ $output == *"-k IDL,INT,CNT"* ]]
    [[ $output == *"-L "* ]]
    [[ $output == *"-N "* ]]
}

@test "stage4: bad ports, addresses, backlogs and -k values exit 2" {
    local v
    assert_bad_ports stage4_accept
    assert_bad_addresses stage4_accept
    assert_usage_error stage4_accept -b 0
    for v in "" 1 1,2 1,2,3,4 0,1,1 1,0,1 1,1,0 1,1,128 32768,1,1 a,b,c 1,,1 " 1,1,1"; do
        assert_usage_error stage4_accept -k "$v"
        # shellcheck disable=SC2154 # stderr_lines: set by Bats run in the helper
        [[ ${stderr_lines[0]} == "stage4_accept: -k $v: three whole numbers IDL,INT,CNT: seconds (1 to 32767), seconds (1 to 32767), probes (1 to 127)" ]] ||
            { echo "reason: ${stderr_lines[0]}"; false; }
    done
    # Longer than any valid value (64 characters and more).
    assert_usage_error stage4_accept -k "1,1,$(printf '%070d' 1)"
}

@test "stage4: -p 0 listens on a port the kernel chose, shown in the readiness line" {
    assert_port_zero stage4_accept
}

@test "stage4: echoes a line of text" {
    start_server stage4_accept -q
    assert_echoes_text
}

@test "stage4: echoes 1 MiB of random binary data byte for byte" {
    start_server stage4_accept -q
    assert_echoes_file 1048576
}

@test "stage4 F8/F9: the client's port, which it never chose, and the server's port 0 both come from ip_local_port_range" {
    local low high client
    read -r low high </proc/sys/net/ipv4/ip_local_port_range
    start_server stage4_accept
    assert_echoes_text
    wait_until "$WAIT_LIMIT" grep -q ' left: ' "$SERVER_OUT"
    client=$(sed -n 's/^client 127\.0\.0\.1:\([0-9]*\) connected .*/\1/p' "$SERVER_OUT")
    echo "range $low-$high, client port $client, server port $PORT"
    ((client >= low && client <= high))
    ((PORT >= low && PORT <= high))
}

@test "stage4 F37: half-close: a client that sends and shuts down its side still gets everything back" {
    start_server stage4_accept
    # nc_send sends, then shutdown(SHUT_WR); the server reads end of stream
    # only after every byte, and echoes all of it before it closes.
    run echo_once $'one\ntwo\nthree\n'
    [ "$status" -eq 0 ]
    [ "$output" = $'one\ntwo\nthree' ]
    wait_until "$WAIT_LIMIT" grep -q "left: 14 bytes echoed" "$SERVER_OUT"
}

@test "stage4 F21/F24: accept() returns a new descriptor (4) and fills in the client's address" {
    start_server stage4_accept
    open_held_client a
    wait_until "$WAIT_LIMIT" grep -q "connected on fd" "$SERVER_OUT"
    local line peer_port
    line=$(grep -m 1 "connected on fd" "$SERVER_OUT")
    [[ $line =~ ^client\ 127\.0\.0\.1:([0-9]+)\ connected\ on\ fd\ 4 ]]
    peer_port=${BASH_REMATCH[1]}
    # The address accept() reported is the client's own end, as ss sees it.
    [ "$(count_sockets established "sport = :$peer_port and dport = :$PORT")" -eq 1 ]
    exec 6>&-
}

@test "stage4 F25: while one client stays connected, the next one's data waits unread; then it is served" {
    start_server stage4_accept -q
    open_held_client first
    printf 'first\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/first.out" first

    # The second client connects and sends (and keeps its side open: its
    # input stays open); the kernel takes its bytes, but the server, blocked
    # in read() on the first, never reads them.
    nc_hold second
    printf 'second\n' >&"$HELD_FD"
    # shellcheck disable=SC2016 # single quotes on purpose: eval expands them on each try
    wait_until "$WAIT_LIMIT" eval '[[ $(server_recvq_total) == 7 ]]'
    [ "$(listen_queue "$PORT")" = "1 128" ]
    [ ! -s "$BATS_TEST_TMPDIR/second.out" ]

    # The first leaves: the server accepts the second and echoes it.
    exec 6>&-
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/second.out" second
}

@test "stage4 F38: clients that reset or hang up end only themselves; the server goes on" {
    start_server stage4_accept -q
    assert_survives_hangups
    # A reset shows as ECONNRESET (from read) or EPIPE (from write) on stderr.
    wait_until "$WAIT_LIMIT" grep -Eq "(ECONNRESET|EPIPE)" "$SERVER_ERR"
}

@test "stage4 F38: a client that resets while still in the queue does not end the server" {
    start_server stage4_accept -q
    open_held_client first
    printf 'first\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/first.out" first
    "$TOOLS/reset" 127.0.0.1 "$PORT" 10
    exec 6>&-
    assert_echoes_text
    is_running "$SERVER_PID"
}

@test "stage4 F27: the side that closes first gets TIME_WAIT: here the client" {
    start_server_fresh_port stage4_accept -q
    assert_echoes_text
    # The client half-closed first (nc_send), so its end waits in TIME_WAIT;
    # the server's end, which closed second, does not.
    # shellcheck disable=SC2016 # single quotes on purpose: eval expands them on each try
    wait_until "$WAIT_LIMIT" eval '(($(count_sockets time-wait "dport = :$PORT") >= 1))'
    [ "$(count_sockets time-wait "sport = :$PORT")" -eq 0 ]
}

@test "stage4 F28: a client that resets (SO_LINGER 0) leaves no TIME_WAIT; one that closes does" {
    start_server_fresh_port stage4_accept -q
    "$TOOLS/reset" 127.0.0.1 "$PORT" 0
    assert_echoes_text
    # Only the client that closed normally left a TIME_WAIT record.
    # shellcheck disable=SC2016 # single quotes on purpose: eval expands them on each try
    wait_until "$WAIT_LIMIT" eval '(($(count_sockets time-wait "dport = :$PORT") == 1))'
}

# half_close TEXT: python3 sends TEXT to the server, shuts down its sending
# side and reads until the server closes; prints what came back and how the
# reading ended: "then end of stream" (a FIN) or "then reset" (an RST). nc
# cannot tell the two apart, and may drop an echo that a reset follows.
half_close() {
    timeout "$WAIT_LIMIT" python3 - "$PORT" "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode())
s.shutdown(socket.SHUT_WR)
got = b""
try:
    while True:
        data = s.recv(65536)
        if not data:
            print(repr(got), "then end of stream")
            break
        got += data
except ConnectionResetError:
    print(repr(got), "then reset")
PY
}

@test "stage4 -L F27/F28: a client that half-closes first keeps TIME_WAIT; with SO_LINGER 0 the server resets instead, and neither side does" {
    command -v python3 >/dev/null 2>&1 || skip "needs python3"
    # Without -L: the client's shutdown sends the first FIN, so its side
    # waits in TIME_WAIT (F27). The client ends only once the server has
    # closed, and by then the record is made.
    start_server_fresh_port stage4_accept -q
    run half_close $'hello\n'
    [ "$output" = "b'hello\n' then end of stream" ]
    [ "$(count_sockets time-wait "dport = :$PORT")" -eq 1 ]
    [ "$(count_sockets time-wait "sport = :$PORT")" -eq 0 ]
    # With -L the server's close is a reset: the echo, already delivered,
    # is still read, and no TIME_WAIT on either side (F28).
    start_server_fresh_port stage4_accept -q -L
    run half_close $'hello\n'
    [ "$output" = "b'hello\n' then reset" ]
    [ "$(count_sockets time-wait "sport = :$PORT or dport = :$PORT")" -eq 0 ]
}

@test "stage4 -k F29: TCP keepalive is on, with its idle time, only when asked" {
    start_server stage4_accept -k 7,3,2
    grep -qx "keepalive: the first probe after 7 s of silence (TCP_KEEPIDLE)" "$SERVER_OUT"
    open_held_client ka
    printf 'x\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/ka.out" x
    assert_keepalive_timer 7
    exec 6>&-
    # Without -k, no keepalive timer.
    start_server stage4_accept
    grep -q "^keepalive off (-k turns it on)" "$SERVER_OUT"
    open_held_client plain
    printf 'x\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/plain.out" x
    keepalive_timer
    [[ -n $output && $output != *keepalive* ]]
    exec 6>&-
}

@test "stage4 -k F29: every client gets SO_KEEPALIVE and the three knobs with the values asked" {
    start_traced_server setsockopt stage4_accept -q -k 7,3,2
    assert_echoes_text
    stop_traced_server
    grep -q 'setsockopt(4, SOL_SOCKET, SO_KEEPALIVE, \[1\], 4) = 0' "$TRACE_OUT"
    grep -q 'setsockopt(4, SOL_TCP, TCP_KEEPIDLE, \[7\], 4) = 0' "$TRACE_OUT"
    grep -q 'setsockopt(4, SOL_TCP, TCP_KEEPINTVL, \[3\], 4) = 0' "$TRACE_OUT"
    grep -q 'setsockopt(4, SOL_TCP, TCP_KEEPCNT, \[2\], 4) = 0' "$TRACE_OUT"
}

@test "stage4 -k F29: a client that vanishes without a word no longer holds the server: read() fails with ETIMEDOUT, and the next client is served" {
    local dir=$BATS_TEST_TMPDIR/netns
    command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 &&
        command -v ip >/dev/null 2>&1 || skip "needs unshare, nsenter and ip"
    unshare --net true 2>/dev/null ||
        skip "cannot make a network namespace here (needs root or user namespaces)"
    # The server in a network namespace of its own: once its loopback is
    # down, nothing gets through, as if the client's machine were unplugged.
    mkdir -p "$dir"
    # shellcheck disable=SC2016 # $0 and $@ are for the wrapper's sh
    printf '#!/bin/sh\nexec unshare --net sh -c %s "%s" "$@"\n' \
        "'ip link set lo up && exec \"\$0\" \"\$@\"'" "$BIN/stage4_accept" >"$dir/stage4_accept"
    chmod +x "$dir/stage4_accept"
    BIN=$dir start_server stage4_accept -k 1,1,2
    mkfifo "$BATS_TEST_TMPDIR/gone.fifo"
    exec 6<>"$BATS_TEST_TMPDIR/gone.fifo"
    nc_send_argv
    spawn nsenter --net="/proc/$SERVER_PID/ns/net" "${NC_ARGV[@]}" 127.0.0.1 "$PORT" \
        <"$BATS_TEST_TMPDIR/gone.fifo" >"$BATS_TEST_TMPDIR/gone.out"
    printf 'x\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/gone.out" x
    in_server_net ip link set lo down
    # 1 s of silence, then 2 probes 1 s apart without an answer: 3 s or so.
    wait_until "$WAIT_LIMIT" grep -qE "^stage4_accept: read from 127\.0\.0\.1:[0-9]+ on fd 4: ETIMEDOUT" "$SERVER_ERR"
    wait_until "$WAIT_LIMIT" grep -q "on fd 4 ended by an error: 2 bytes echoed" "$SERVER_OUT"
    # The server is back in accept(): the next client is echoed.
    in_server_net ip link set lo up
    run in_server_net timeout "$WAIT_LIMIT" "${NC_ARGV[@]}" 127.0.0.1 "$PORT" <<<next
    [ "$output" = next ]
    exec 6>&-
}

@test "stage4 -k: where TCP_KEEPIDLE is missing and TCP_KEEPALIVE stands for it (macOS's spelling, emulated), the idle time is set with TCP_KEEPALIVE and said so" {
    local dir=$BATS_TEST_TMPDIR/darwin
    command -v cc >/dev/null 2>&1 || skip "needs cc"
    mkdir -p "$dir"
    # A header read before the program's own: Linux's idle-time option under
    # macOS's name, with the same number, so the kernel still applies it.
    printf '%s\n' '#include <netinet/tcp.h>' \
        'enum { linux_keepidle = TCP_KEEPIDLE };' '#undef TCP_KEEPIDLE' \
        '#define TCP_KEEPALIVE linux_keepidle' >"$dir/darwin.h"
    cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Werror \
        -include "$dir/darwin.h" -I"$ROOT/common" -o "$dir/stage4_accept" \
        "$ROOT/stage4_accept/stage4_accept.c" "$ROOT/common/common.c"
    BIN=$dir start_server stage4_accept -k 7,3,2
    grep -qx "keepalive: the first probe after 7 s of silence (TCP_KEEPALIVE, this system's TCP_KEEPIDLE)" "$SERVER_OUT"
    grep -qx "keepalive: then a probe every 3 s (TCP_KEEPINTVL)" "$SERVER_OUT"
    # It claims no knob is missing.
    run grep -c "has no\|has neither" "$SERVER_OUT"
    [ "$output" = 0 ]
    open_held_client ka
    printf 'x\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/ka.out" x
    assert_keepalive_timer 7
    exec 6>&-
}

@test "stage4 F46: TCP_NODELAY is set on every client, and not with -N" {
    assert_nodelay stage4_accept
}

@test "stage4 F30: while no client comes, the server sleeps in accept(): blocking, no CPU" {
    start_server stage4_accept -q
    local flags
    # The listener has no O_NONBLOCK (04000) in its status flags.
    flags=$(awk '/^flags:/ { print $2 }' "/proc/$SERVER_PID/fdinfo/3")
    (((8#$flags & 8#4000) == 0))
    # The process is asleep (S), inside accept().
    # shellcheck disable=SC2016 # single quotes on purpose: eval expands them on each try
    wait_until "$WAIT_LIMIT" eval '[[ $(awk "{ print \$3 }" /proc/$SERVER_PID/stat) == S ]]'
    (($(cpu_percent "$SERVER_PID") < 5))
}

@test "stage4: SIGTERM while blocked in accept() exits 0" {
    assert_signal_exit stage4_accept TERM
}

@test "stage4: SIGINT while blocked in read() on a client exits 0" {
    start_server stage4_accept
    open_held_client a
    wait_until "$WAIT_LIMIT" grep -q "connected on fd" "$SERVER_OUT"
    stop_process "$SERVER_PID" INT
    [ "$STOP_STATUS" = 0 ]
    exec 6>&-
}

@test "stage4 F10: a second copy on a listening port fails with EADDRINUSE, with or without -R" {
    assert_addr_in_use stage4_accept
    assert_addr_in_use stage4_accept -R
}

@test "stage4 F11: SO_REUSEADDR binds a port with a TIME_WAIT connection; -R does not" {
    assert_reuseaddr stage4_accept
}

@test "stage4 F38: out of descriptors (EMFILE), accept() is retried every second and the server goes on" {
    assert_emfile_goes_on stage4_accept "accept (retrying in a second): EMFILE"
}

@test "stage4: a setup call that fails (socket, setsockopt, bind, getsockname, listen, sigaction, accept) exits 1 and names the call" {
    # sigaction: SIGINT, SIGTERM (common.c), then SIGPIPE; accept(): an
    # error that is not about one connection (EIO here; EBADF, EINVAL).
    assert_setup_fails stage4_accept "socket setsockopt bind getsockname listen sigaction sigaction@2 sigaction@3 accept" -p 0 -q
}

# ---- errors injected by the preload library (tests/fault/fail.c) ---------------

@test "stage4 F38: accept() failing for one connection (ECONNABORTED, EPROTO, EINTR) is reported, and the client after it is served" {
    local err
    for err in ECONNABORTED EPROTO EINTR; do
        start_faulty_server "accept:$err@1" stage4_accept -q
        assert_echoes_text
        assert_warned "stage4_accept: accept (that connection only; going on): $err ("
        stop_all
    done
}

@test "stage4 F38: accept() out of descriptors (EMFILE) is retried after a second; the waiting client is then served" {
    start_faulty_server accept:EMFILE@1 stage4_accept -q
    assert_echoes_text
    assert_warned "stage4_accept: accept (retrying in a second): EMFILE (Too many open files)"
}

@test "stage4: read() and write() interrupted by a signal (EINTR) are called again: the echo is whole, no error" {
    start_faulty_server read:EINTR@1,write:EINTR@1 stage4_accept -q
    assert_echoes_text
    [ ! -s "$SERVER_ERR" ]
}

@test "stage4 F38: write() and close() failing on one client end only that client, saying so; the next is echoed" {
    assert_write_and_close_fail stage4_accept
}

@test "stage4 F38: TCP_NODELAY or a keepalive option failing on a new client is reported, and the client is still served" {
    local n
    assert_nodelay_fails stage4_accept
    stop_all
    # -k: setsockopt call 1 is SO_REUSEADDR, 2 the client's TCP_NODELAY, 3
    # its SO_OOBINLINE; 4 to 7 set its keepalive (SO_KEEPALIVE,
    # TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT).
    for n in 4 5 6 7; do
        start_faulty_server "setsockopt@$n" stage4_accept -q -k 60,10,5
        assert_echoes_text
        assert_warned "stage4_accept: keepalive on fd 4 (going on without): EIO (Input/output error)"
        stop_all
    done
}

@test "stage4 F38: setsockopt(SO_LINGER) failing at close (-L) is reported, and the client still has its whole echo" {
    # setsockopt call 4 is the first client's SO_LINGER, at its close (1 is
    # SO_REUSEADDR, 2 and 3 the client's TCP_NODELAY and SO_OOBINLINE),
    # which is then an ordinary close (FIN).
    start_faulty_server setsockopt@4 stage4_accept -q -L
    assert_echoes_text
    assert_warned "stage4_accept: setsockopt SO_LINGER on fd 4: EIO (Input/output error)"
}

@test "stage4: started with stdout or stderr closed, it opens /dev/null there, so no socket lands on 1 or 2; it echoes, and SIGTERM exits 0" {
    assert_closed_stdio stage4_accept echoes
}

@test "stage4 F45: a byte sent as urgent data (MSG_OOB) comes back in its place in the stream" {
    assert_urgent_echoed stage4_accept
}
