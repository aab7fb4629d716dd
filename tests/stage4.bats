#!/usr/bin/env bats
# stage4_accept: an iterative, blocking echo server (CURRICULUM F21 to F27).

load helpers

@test "stage4: -h prints the usage to stdout and exits 0" {
    assert_help stage4_accept
}

@test "stage4: bad ports, addresses and backlogs exit 2" {
    assert_bad_ports stage4_accept
    assert_bad_addresses stage4_accept
    assert_usage_error stage4_accept -b 0
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
    # nc -N sends, then shutdown(SHUT_WR); the server reads end of stream
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

    # The second client connects and sends (and keeps its side open, no
    # -N); the kernel takes its bytes, but the server, blocked in read() on
    # the first, never reads them.
    printf 'second\n' >"$BATS_TEST_TMPDIR/second.in"
    spawn nc 127.0.0.1 "$PORT" <"$BATS_TEST_TMPDIR/second.in" >"$BATS_TEST_TMPDIR/second.out"
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
    # The client half-closed first (nc -N), so its end waits in TIME_WAIT;
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
