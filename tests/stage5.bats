#!/usr/bin/env bats
# stage5_nonblock: every client at once with non-blocking sockets, and the
# CPU a loop that never sleeps burns (CURRICULUM F30 to F32).

load helpers

@test "stage5: -h prints the usage to stdout and exits 0, listing -m" {
    assert_help stage5_nonblock
    [[ $output == *"-m MAXCLIENTS"* ]]
}

@test "stage5: bad ports, addresses, backlogs and -m values exit 2" {
    assert_bad_ports stage5_nonblock
    assert_bad_addresses stage5_nonblock
    assert_usage_error stage5_nonblock -b 0
    local m
    for m in 0 -1 abc 1000001 ""; do
        assert_usage_error stage5_nonblock -m "$m"
    done
}

@test "stage5: -p 0 listens on a port the kernel chose, shown in the readiness line" {
    assert_port_zero stage5_nonblock
}

@test "stage5: echoes a line of text" {
    start_server stage5_nonblock -q
    assert_echoes_text
}

@test "stage5: echoes 1 MiB of random binary data byte for byte" {
    start_server stage5_nonblock -q
    assert_echoes_file 1048576
}

@test "stage5: one idle client does not hold up another: both are served at once" {
    start_server stage5_nonblock -q
    open_held_client idle
    printf 'first\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/idle.out" first
    # The first client stays connected and silent; the second is served.
    assert_echoes_text
    is_running "$HELD_PID"
    printf 'again\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/idle.out" $'first\nagain'
    exec 6>&-
}

@test "stage5 F31: the listener and the clients are non-blocking (O_NONBLOCK in /proc/PID/fdinfo)" {
    start_server stage5_nonblock
    open_held_client a
    wait_until "$WAIT_LIMIT" grep -q "connected on fd 4" "$SERVER_OUT"
    local fd flags
    for fd in 3 4; do
        flags=$(awk '/^flags:/ { print $2 }' "/proc/$SERVER_PID/fdinfo/$fd")
        # O_NONBLOCK is 04000 (octal) on Linux.
        (((8#$flags & 8#4000) != 0))
    done
    exec 6>&-
}

@test "stage5 F32: while idle, the busy loop burns a CPU (over 30% of one core, measured)" {
    start_server stage5_nonblock -q
    local cpu
    cpu=$(cpu_percent "$SERVER_PID")
    echo "stage5 idle CPU: $cpu%"
    # A server that sleeps while idle uses about 0%; this one never sleeps.
    ((cpu > 30))
}

@test "stage5 F32: the narration counts the spin every idle second" {
    start_server stage5_nonblock
    wait_until "$WAIT_LIMIT" grep -q "^idle second: the loop went round" "$SERVER_OUT"
    local line rounds eagain
    line=$(grep -m 1 "^idle second" "$SERVER_OUT")
    [[ $line =~ went\ round\ ([0-9]+)\ times\ and\ ([0-9]+)\ calls\ returned\ EAGAIN ]]
    rounds=${BASH_REMATCH[1]} eagain=${BASH_REMATCH[2]}
    ((rounds > 1000 && eagain >= rounds))
}

@test "stage5 -m 1: a client over the limit is closed at once; the first keeps working" {
    assert_max_one_client stage5_nonblock
}

@test "stage5 F37: half-close: every byte owed is sent before the server closes" {
    start_server stage5_nonblock
    run echo_once $'one\ntwo\nthree\n'
    [ "$output" = $'one\ntwo\nthree' ]
    wait_until "$WAIT_LIMIT" grep -q "left: 14 bytes echoed" "$SERVER_OUT"
}

@test "stage5 F38: clients that reset or hang up end only themselves; the server goes on" {
    start_server stage5_nonblock -q
    assert_survives_hangups
}

@test "stage5: SIGTERM and SIGINT exit 0" {
    assert_signal_exit stage5_nonblock TERM
    assert_signal_exit stage5_nonblock INT
}

@test "stage5 F10: a second copy on a listening port fails with EADDRINUSE, with or without -R" {
    assert_addr_in_use stage5_nonblock
    assert_addr_in_use stage5_nonblock -R
}

@test "stage5 F11: SO_REUSEADDR binds a port with a TIME_WAIT connection; -R does not" {
    assert_reuseaddr stage5_nonblock
}

@test "stage5 F38: out of descriptors (EMFILE), accept() is retried and the server goes on" {
    assert_emfile_goes_on stage5_nonblock "accept (will retry): EMFILE"
}

@test "stage5: a setup call that fails (socket, setsockopt, getsockname, listen, sigaction) exits 1 and names the call" {
    assert_setup_fails stage5_nonblock "socket setsockopt getsockname listen sigaction" -p 0 -q
}
