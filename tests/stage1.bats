#!/usr/bin/env bats
# stage1_socket: socket() makes an endpoint, with a descriptor and no address
# (CURRICULUM F1, F4).

load helpers

@test "stage1: -h prints the usage to stdout and exits 0" {
    assert_help stage1_socket
}

@test "stage1: an unknown option or a stray argument exits 2 with the usage" {
    assert_usage_error stage1_socket -x
    assert_usage_error stage1_socket -p 80
    assert_usage_error stage1_socket extra
}

@test "stage1 F1: socket() returns descriptor 3, the lowest free one after stdin, stdout, stderr" {
    run --separate-stderr "$BIN/stage1_socket" 3>&-
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [[ $output == *"socket(AF_INET, SOCK_STREAM, 0) returned descriptor 3"* ]]
    [[ $output == *"why 3: descriptors 0 (stdin), 1 (stdout), 2 (stderr) are already open"* ]]
}

@test "stage1 F1: with descriptors 3 and 4 already open, the socket gets 5" {
    run "$BIN/stage1_socket" 3</dev/null 4</dev/null
    [ "$status" -eq 0 ]
    [[ $output == *"returned descriptor 5"* ]]
    [[ $output == *"descriptors 0 (stdin), 1 (stdout), 2 (stderr), 3, 4 are already open"* ]]
}

@test "stage1 F1: a new socket has no address and no port (0.0.0.0:0) and no peer (ENOTCONN)" {
    run "$BIN/stage1_socket" 3>&-
    [ "$status" -eq 0 ]
    [[ $output == *"family:  AF_INET, IPv4"* ]]
    [[ $output == *"address: 0.0.0.0:0: no address and no port yet"* ]]
    [[ $output == *"type:    SOCK_STREAM"* ]]
    [[ $output == *"peer:    none: getpeername() fails with ENOTCONN"* ]]
}

@test "stage1 F4: getsockname() is told the room it has (value-result) and says how much it filled" {
    run "$BIN/stage1_socket" 3>&-
    [ "$status" -eq 0 ]
    # sockaddr_storage offers 128 bytes; an IPv4 address fills 16.
    [[ $output == *"family:  AF_INET, IPv4 (getsockname filled 16 of the 128 bytes offered)"* ]]
}

@test "stage1 F1: with stdin closed, the socket gets descriptor 0" {
    # (Closed inside a child shell: Bats' run gives its command a stdin.)
    run bash -c 'exec "$1" <&- 3>&-' _ "$BIN/stage1_socket"
    [ "$status" -eq 0 ]
    [[ $output == *"returned descriptor 0"* ]]
    [[ $output == *"why 0: descriptor 0 (stdin) was closed"* ]]
}

@test "stage1 F1: /proc shows the descriptor as a socket, a kernel object" {
    run "$BIN/stage1_socket" 3>&-
    [ "$status" -eq 0 ]
    [[ $output =~ /proc/[0-9]+/fd/3\ -\>\ socket:\[[0-9]+\] ]]
}

@test "stage1 -6: an IPv6 socket reports AF_INET6 and [::]:0" {
    if ! has_ipv6_loopback; then
        skip "this machine has no IPv6 loopback (::1)"
    fi
    run "$BIN/stage1_socket" -6 3>&-
    [ "$status" -eq 0 ]
    [[ $output == *"socket(AF_INET6, SOCK_STREAM, 0) returned descriptor 3"* ]]
    [[ $output == *"address: [::]:0: no address"* ]]
    [[ $output == *"getsockname filled 28 of the 128 bytes offered"* ]]
}

@test "stage1 -s: with stdin not a terminal, steps are announced and not paused for" {
    run timeout 10 "$BIN/stage1_socket" -s </dev/null 3>&-
    [ "$status" -eq 0 ]
    [[ $output == *"[step] stdin is not a terminal, so steps are announced but not paused for"* ]]
    [[ $output == *"[step] next: socket(AF_INET, SOCK_STREAM, 0)"* ]]
    [[ $output == *"[step] next: close(3)"* ]]
    [[ $output =~ \[step\]\ PID\ [0-9]+ ]]
}

@test "stage1 -s: on a terminal, each step waits for Enter" {
    on_terminal "$BIN/stage1_socket -s"
    wait_until "$WAIT_LIMIT" grep -q "next: socket(AF_INET" "$TERM_OUT"
    # It is waiting for Enter: the socket has not been created yet.
    [ "$(grep -c "returned descriptor" "$TERM_OUT")" -eq 0 ]
    type_keys '\n'
    wait_until "$WAIT_LIMIT" grep -q "next: close(" "$TERM_OUT"
    grep -q "returned descriptor" "$TERM_OUT"
    [ "$(grep -c "closed descriptor" "$TERM_OUT")" -eq 0 ]
    type_keys '\n'
    terminal_ends
    grep -q "closed descriptor" "$TERM_OUT"
}

@test "stage1 -s: on a terminal, end of input (Ctrl-D) stops the pausing, and it runs to the end" {
    on_terminal "$BIN/stage1_socket -s"
    wait_until "$WAIT_LIMIT" grep -q "next: socket(AF_INET" "$TERM_OUT"
    # Ctrl-D at the start of a line: the terminal reports end of input.
    type_keys '\004'
    terminal_ends
    grep -q "end of input: not pausing any more" "$TERM_OUT"
    grep -q "closed descriptor" "$TERM_OUT"
}

@test "stage1: a setup call that fails (socket, getsockname, getsockopt, getpeername, close) exits 1 and names the call" {
    # getsockopt: SO_TYPE, then SO_RCVBUF, then SO_SNDBUF.
    assert_setup_fails stage1_socket "socket getsockname getsockopt getsockopt@2 getsockopt@3 getpeername close"
}

@test "stage1: an errno the program has no name for is shown by its number, with its text" {
    run_with_faults socket:ENOTBLK stage1_socket
    [ "$status" -eq 1 ]
    [[ $stderr =~ ^stage1_socket:\ socket\(.*\):\ errno\ [0-9]+\ \(Block\ device\ required\)$ ]]
}

@test "stage1: when /proc cannot be read (readlink fails), it says so and goes on" {
    run_with_faults readlink stage1_socket
    [ "$status" -eq 0 ]
    # (The number is not always 3: Bats holds descriptors of its own.)
    [[ $stderr =~ ^stage1_socket:\ readlink\ /proc/self/fd/[0-9]+:\ EIO\ \(Input/output\ error\)$ ]]
    [[ $output == *"closed descriptor "* ]]
}

# The preload library behind every "fails" test of the suites
# (tests/fault/fail.c), tried on the simplest program.
@test "tests: the preload library ends a program given a malformed rule (status 125), and applies its rules only to FAIL_PROGRAM's program" {
    local rule
    for rule in sokcet socket:ENOSUCH socket@0 read:SHORT; do
        run_with_faults "$rule" stage1_socket
        echo "$rule: exit $status: $stderr"
        [ "$status" -eq 125 ]
        [ "$stderr" = "libfail: bad FAIL_CALL rule: $rule" ]
    done
    # The same rule, for another program and for this one.
    local vars
    read -r -a vars <<<"$(fault_env socket some_other_program)"
    run --separate-stderr timeout "$WAIT_LIMIT" env "${vars[@]}" "$BIN/stage1_socket"
    [ "$status" -eq 0 ]
    run_with_faults socket stage1_socket
    [ "$status" -eq 1 ]
}

@test "stage1: with stdout closed, it opens /dev/null there first: the socket is not descriptor 1, and it exits 0" {
    local out=$BATS_TEST_TMPDIR/err
    # Were the socket descriptor 1, the report would be written into it: an
    # unconnected socket, so EPIPE, and SIGPIPE ends the program (status
    # 141). Exit 0 and nothing on stderr show it wrote to /dev/null instead.
    run bash -c 'exec "$1" >&- 2>"$2"' _ "$BIN/stage1_socket" "$out"
    [ "$status" -eq 0 ]
    [ ! -s "$out" ]
}
