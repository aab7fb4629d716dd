#!/usr/bin/env bats
# stage3_listen: listen() turns the socket passive; the kernel completes
# handshakes and queues them with nobody calling accept() (CURRICULUM F13 to
# F20).

load helpers

# hold_client: connects an nc to the server on PORT and keeps it open
# (nc_hold: its input stays open); CLIENT_PIDS gathers them.
hold_client() {
    nc_hold "client${#CLIENT_PIDS[@]}"
    CLIENT_PIDS+=("$HELD_PID")
}

# queued: the listener's Recv-Q, the connections waiting for accept().
queued() {
    local q
    q=$(listen_queue "$PORT")
    echo "${q%% *}"
}

# queued_is N: the listener's Recv-Q is N.
queued_is() {
    [[ $(queued) == "$1" ]]
}

# attempts_are N: N connection attempts are visible to the kernel, either
# completed and queued on the listener, or still in SYN-SENT at the client.
attempts_are() {
    (($(queued) + $(count_sockets syn-sent "dport = :$PORT") == $1))
}

@test "stage3: -h prints the usage to stdout and exits 0" {
    assert_help stage3_listen
}

@test "stage3: a backlog that is not a positive integer that fits an int exits 2" {
    local b
    for b in 0 -1 abc 1.5 "" 2147483648 99999999999999999999; do
        assert_usage_error stage3_listen -b "$b"
    done
}

@test "stage3: bad ports and addresses exit 2" {
    assert_bad_ports stage3_listen
    assert_bad_addresses stage3_listen
}

@test "stage3 F8: -p 0 listens on a port the kernel chose, shown in the readiness line" {
    assert_port_zero stage3_listen
}

@test "stage3 F20: ss shows the listening socket, with the backlog as Send-Q" {
    start_server stage3_listen -q -b 7
    [ "$(listen_queue "$PORT")" = "0 7" ]
}

@test "stage3 F14: a client connects though nobody calls accept(): the kernel did the handshake" {
    start_server stage3_listen -q
    run nc_connects 127.0.0.1 "$PORT"
    [ "$status" -eq 0 ]
    # The client has closed; its connection still waits to be accepted.
    wait_until "$WAIT_LIMIT" queued_is 1
}

@test "stage3 F14/F20: a connected client waits in the queue (Recv-Q 1), established on both ends" {
    start_server stage3_listen -q
    hold_client
    wait_until "$WAIT_LIMIT" queued_is 1
    # The server side of the connection exists in the kernel, established,
    # though the program has no descriptor for it.
    [ "$(count_sockets established "sport = :$PORT")" -eq 1 ]
    [ "$(count_sockets established "dport = :$PORT")" -eq 1 ]
}

@test "stage3 F15/F17/F18: with backlog 2, exactly 3 connections complete; the rest wait in SYN-SENT" {
    if [[ $(uname -s) != Linux ]]; then
        skip "backlog + 1 is Linux's rule"
    fi
    start_server stage3_listen -q -b 2
    local i
    # One at a time, each seen by the kernel before the next, so the count
    # is exact and no handshake races another.
    for i in 1 2 3 4 5 6; do
        hold_client
        wait_until "$WAIT_LIMIT" attempts_are "$i"
    done
    [ "$(queued)" -eq 3 ]
    [ "$(count_sockets syn-sent "dport = :$PORT")" -eq 3 ]
    # The queue is full, and the kernel drops new handshakes rather than
    # refusing them: the waiting clients are still trying, not failed.
    for i in 3 4 5; do
        is_running "${CLIENT_PIDS[$i]}"
    done
}

@test "stage3 F17: a backlog above net.core.somaxconn is capped silently, and the narration says so" {
    local cap
    cap=$(cat /proc/sys/net/core/somaxconn) || skip "no /proc/sys/net/core/somaxconn"
    start_server stage3_listen -b $((cap + 1000))
    [ "$(listen_queue "$PORT")" = "0 $cap" ]
    grep -q "note: backlog $((cap + 1000)) is above net.core.somaxconn = $cap, so the kernel silently uses $cap" "$SERVER_OUT"
}

@test "stage3 F17: the narration states the kernel's cap and backlog + 1" {
    local cap
    cap=$(cat /proc/sys/net/core/somaxconn) || skip "no /proc/sys/net/core/somaxconn"
    start_server stage3_listen -b 2
    grep -q "backlog 2 (net.core.somaxconn = $cap caps it): Linux queues up to backlog + 1 = 3 completed connections" "$SERVER_OUT"
}

@test "stage3 F10: a second copy on a listening port fails with EADDRINUSE, even with SO_REUSEADDR" {
    assert_addr_in_use stage3_listen
}

@test "stage3 F11: SO_REUSEADDR binds a port with a TIME_WAIT connection; -R does not" {
    assert_reuseaddr stage3_listen
}

@test "stage3: IPv6: -a ::1 listens, and the readiness line writes [::1]:PORT" {
    if ! has_ipv6_loopback; then
        skip "this machine has no IPv6 loopback (::1)"
    fi
    assert_ipv6 stage3_listen
    run nc_connects ::1 "$PORT"
    [ "$status" -eq 0 ]
}

@test "stage3: SIGTERM ends it with status 0, even with connections queued" {
    start_server stage3_listen -q
    hold_client
    wait_until "$WAIT_LIMIT" queued_is 1
    stop_process "$SERVER_PID" TERM
    [ "$STOP_STATUS" = 0 ]
}

@test "stage3: SIGINT ends it with status 0" {
    assert_signal_exit stage3_listen INT
}

@test "stage3 -s: with stdin not a terminal, every step is announced, listen() included" {
    start_server stage3_listen -s -b 5
    grep -q "^\[step\] next: bind() asks for 127.0.0.1:0" "$SERVER_OUT"
    grep -q "^\[step\] next: listen(5) makes the socket passive" "$SERVER_OUT"
}

@test "stage3: a setup call that fails (socket, setsockopt, bind, getsockname, listen, sigaction) exits 1 and names the call" {
    assert_setup_fails stage3_listen "socket setsockopt bind getsockname listen sigaction sigaction@2" -p 0 -q
}

@test "stage3 F17: where net.core.somaxconn cannot be read, the narration says so, and it listens all the same" {
    start_faulty_server fopen:ENOENT stage3_listen -b 5
    grep -q "^backlog 5 (the kernel's cap is not readable here: " "$SERVER_OUT"
    [ ! -s "$SERVER_ERR" ]
}

@test "stage3: started with stdout or stderr closed, it opens /dev/null there, so no socket lands on 1 or 2; SIGTERM still exits 0" {
    assert_closed_stdio stage3_listen
}
