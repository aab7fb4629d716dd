#!/usr/bin/env bats
# stage5_nonblock: every client at once with non-blocking sockets, and the
# CPU a loop that never sleeps burns (CURRICULUM F30 to F32, and F46 through
# TCP_NODELAY).

load helpers

@test "stage5: -h prints the usage to stdout and exits 0, listing -m and -N" {
    assert_help stage5_nonblock
    [[ $output == *"-m MAXCLIENTS"* ]]
    [[ $output == *"-N "* ]]
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

@test "stage5 F46: TCP_NODELAY is set on every client, and not with -N" {
    assert_nodelay stage5_nonblock
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

@test "stage5: a setup call that fails (socket, setsockopt, bind, getsockname, listen, fcntl, clock_gettime, sigaction, accept) exits 1 and names the call" {
    # sigaction: SIGINT, SIGTERM (common.c), then SIGPIPE; accept(): an
    # error that is not about one connection (EIO here; EBADF, EINVAL).
    # clock_gettime fails from its first call on: clang's sanitizer runtime,
    # linked into the program, makes a call of its own first.
    assert_setup_fails stage5_nonblock "socket setsockopt bind getsockname listen fcntl fcntl@2 clock_gettime@1+ sigaction sigaction@2 sigaction@3 accept" -p 0 -q
    # Narrating, the loop reads the clock every round too.
    assert_setup_fails stage5_nonblock clock_gettime@2+ -p 0
}

# ---- errors injected by the preload library (tests/fault/fail.c) ---------------

@test "stage5 F38: accept() failing for one connection (ECONNABORTED) is reported, and the client after it is served" {
    start_faulty_server accept:ECONNABORTED@1 stage5_nonblock -q
    assert_echoes_text
    assert_warned "stage5_nonblock: accept (that connection only; going on): ECONNABORTED ("
}

@test "stage5 F38: accept() out of descriptors (EMFILE) is retried next round; the waiting client is then served" {
    start_faulty_server accept:EMFILE@1 stage5_nonblock -q
    assert_echoes_text
    assert_warned "stage5_nonblock: accept (will retry): EMFILE (Too many open files)"
}

@test "stage5 F38: fcntl(O_NONBLOCK) failing on a new client closes that client at once, saying so; the next is echoed" {
    # fcntl calls 1 and 2 are the listener's (F_GETFL, F_SETFL). The close
    # of that client fails too (the descriptor is gone all the same).
    start_faulty_server fcntl@3,close:EIO@1 stage5_nonblock -q
    assert_nothing_back $'lost\n'
    assert_warned "stage5_nonblock: fcntl O_NONBLOCK on fd 4: EIO (Input/output error)"
    assert_warned "stage5_nonblock: close fd 4: EIO (Input/output error)"
    assert_echoes_text
}

@test "stage5 F38: TCP_NODELAY failing on a new client is reported, and the client is still served" {
    assert_nodelay_fails stage5_nonblock
}

@test "stage5: out of memory for the client list, it exits 1; for one client, that client is closed and the next echoed" {
    need_own_allocator stage5_nonblock
    run_with_faults calloc:ENOMEM@1 stage5_nonblock -q -p 0
    [ "$status" -eq 1 ]
    # shellcheck disable=SC2154 # stderr is set by Bats run --separate-stderr
    [ "$stderr" = "stage5_nonblock: calloc for 1000 clients: ENOMEM (Cannot allocate memory)" ]
    start_faulty_server calloc:ENOMEM@2,close:EIO@1 stage5_nonblock -q
    assert_nothing_back $'lost\n'
    assert_warned "stage5_nonblock: calloc for a client; closing fd 4: ENOMEM (Cannot allocate memory)"
    assert_warned "stage5_nonblock: close fd 4: EIO (Input/output error)"
    assert_echoes_text
}

@test "stage5: a write() that would block (EAGAIN) is tried again next round: the echo is whole, no error" {
    start_faulty_server write:EAGAIN@1,read:EINTR@2 stage5_nonblock -q
    assert_echoes_text
    [ ! -s "$SERVER_ERR" ]
}

@test "stage5 F38: write() and close() failing on one client end only that client, saying so; the next is echoed" {
    assert_write_and_close_fail stage5_nonblock
}

@test "stage5 -m 1: when closing a client over the limit fails (EIO), it says so and the first client keeps working" {
    assert_turned_away_close_fails stage5_nonblock 5
}

@test "stage5: started with stdout or stderr closed, it opens /dev/null there, so no socket lands on 1 or 2; it echoes, and SIGTERM exits 0" {
    assert_closed_stdio stage5_nonblock echoes
}

@test "stage5 F45: a byte sent as urgent data (MSG_OOB) comes back in its place in the stream" {
    assert_urgent_echoed stage5_nonblock
}
