#!/usr/bin/env bats
# stage2_bind: bind() gives the socket an address (CURRICULUM F6 to F12).

load helpers

@test "stage2: -h prints the usage to stdout and exits 0" {
    assert_help stage2_bind
}

@test "stage2: a port that is not a whole number in 0..65535 exits 2" {
    assert_bad_ports stage2_bind
}

@test "stage2: an address that is not an IPv4 or IPv6 literal exits 2" {
    assert_bad_addresses stage2_bind
}

@test "stage2: options it does not take (-b, -x) and stray arguments exit 2" {
    assert_usage_error stage2_bind -b 5
    assert_usage_error stage2_bind -x
    assert_usage_error stage2_bind -p 0 extra
    assert_usage_error stage2_bind --help
    # shellcheck disable=SC2154 # stderr_lines is set by Bats run, in assert_usage_error
    [ "${stderr_lines[0]}" = "stage2_bind: unknown option: options are single letters, not --words" ]
}

@test "stage2 F8: -p 0 binds a port the kernel chose, and the readiness line shows it" {
    assert_port_zero stage2_bind
}

@test "stage2 F8: the narration says the kernel chose the port" {
    start_server stage2_bind
    # shellcheck disable=SC2153 # PORT is set by start_server (helpers.bash)
    grep -q "port 0 asked the kernel to choose: getsockname() says it chose 127.0.0.1:$PORT" "$SERVER_OUT"
}

@test "stage2 F12: bound is not listening: a connection is refused" {
    start_server stage2_bind -q
    run nc_connects 127.0.0.1 "$PORT"
    [ "$status" -ne 0 ]
    # Refused (the kernel answered with RST), not unanswered.
    [ "$(connect_error 127.0.0.1 "$PORT")" = "Connection refused" ]
}

@test "stage2 F10: a second copy without SO_REUSEADDR (-R) fails with EADDRINUSE and exit 1" {
    assert_addr_in_use stage2_bind -R
}

@test "stage2 F10: on Linux, two copies that both set SO_REUSEADDR and never listen both bind" {
    if [[ $(uname -s) != Linux ]]; then
        skip "a Linux rule; the BSDs and macOS refuse the second bind"
    fi
    start_server stage2_bind -q
    local first=$SERVER_PID port=$PORT
    start_server stage2_bind -q -p "$port"
    [ "$PORT" = "$port" ]
    is_running "$first"
}

@test "stage2 F11: SO_REUSEADDR binds a port with a TIME_WAIT connection; -R does not" {
    assert_reuseaddr stage2_bind
}

@test "stage2 F11: -R binds a port with no TIME_WAIT record, and its narration does not claim the port has one" {
    start_server stage2_bind -R
    grep -qx "SO_REUSEADDR not set (-R): bind() fails with EADDRINUSE if this port still has connections in TIME_WAIT" "$SERVER_OUT"
    grep -q "^bound to 127.0.0.1:$PORT\$" "$SERVER_OUT"
}

@test "stage2 F7: an address that is not on this host fails with EADDRNOTAVAIL and exit 1" {
    if [[ $(cat /proc/sys/net/ipv4/ip_nonlocal_bind 2>/dev/null) == 1 ]]; then
        skip "net.ipv4.ip_nonlocal_bind is 1 here: binding any address succeeds"
    fi
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): reserved for documentation, never
    # assigned to a host. bind() sends nothing on the network.
    run --separate-stderr "$BIN/stage2_bind" -q -a 192.0.2.1 -p 0
    [ "$status" -eq 1 ]
    # shellcheck disable=SC2154 # stderr is set by Bats run --separate-stderr
    [ "$stderr" = "stage2_bind: bind 192.0.2.1:0: EADDRNOTAVAIL (Cannot assign requested address)" ]
}

@test "stage2: a port below the unprivileged limit fails with EACCES and exit 1 for an ordinary user" {
    local limit cmd=()
    limit=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
    if ((limit <= 1)); then
        skip "every port is unprivileged here (ip_unprivileged_port_start = $limit)"
    fi
    if ((EUID == 0)); then
        command -v setpriv >/dev/null ||
            skip "running as root and no setpriv to drop privilege"
        cmd=(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all)
        "${cmd[@]}" test -x "$BIN/stage2_bind" ||
            skip "user nobody cannot run $BIN/stage2_bind (a private directory?)"
    fi
    run --separate-stderr "${cmd[@]}" "$BIN/stage2_bind" -q -p 1
    [ "$status" -eq 1 ]
    [ "$stderr" = "stage2_bind: bind 127.0.0.1:1: EACCES (Permission denied)" ]
}

@test "stage2: IPv6: -a ::1 binds, and the readiness line writes [::1]:PORT" {
    if ! has_ipv6_loopback; then
        skip "this machine has no IPv6 loopback (::1)"
    fi
    assert_ipv6 stage2_bind
}

@test "stage2: -q prints only the readiness line" {
    start_server stage2_bind -q
    [ "$(wc -l <"$SERVER_OUT")" -eq 1 ]
}

@test "stage2: SIGTERM ends it with status 0" {
    assert_signal_exit stage2_bind TERM
}

@test "stage2: SIGINT ends it with status 0" {
    assert_signal_exit stage2_bind INT
}

@test "stage2 -s: with stdin not a terminal, the steps are announced and it still binds" {
    start_server stage2_bind -s
    grep -q "^\[step\] next: socket()" "$SERVER_OUT"
    grep -q "^\[step\] next: setsockopt(SO_REUSEADDR)" "$SERVER_OUT"
    grep -q "^\[step\] next: bind() asks for 127.0.0.1:0" "$SERVER_OUT"
}

@test "stage2: a setup call that fails (socket, setsockopt, bind, getsockname, sigaction) exits 1 and names the call" {
    # bind: an errno with no hint (EIO); sigaction: SIGINT, then SIGTERM.
    assert_setup_fails stage2_bind "socket setsockopt bind getsockname sigaction sigaction@2" -p 0 -q
}

@test "stage2: started with stdout or stderr closed, it opens /dev/null there, so no socket lands on 1 or 2; SIGTERM still exits 0" {
    assert_closed_stdio stage2_bind
}
