#!/usr/bin/env bats
# stage6_poll and its twin stage6_select: the multiplexed echo server
# (CURRICULUM F33 to F41, and F27 to F29 through its switches).
#
# Both programs must pass the same echo suite: each test below that names
# "stage6" runs its check once per program (for_each_server), so the checks
# are written once. A few tests are about one program only.

# Bats runs each @test in a subshell, and every check reads the output its
# own `run` set in that same subshell: shellcheck's "modified in a subshell"
# (SC2030, SC2031) comes from its model of @test, not from a lost value.
# shellcheck disable=SC2030,SC2031
load helpers

SERVERS=(stage6_poll stage6_select)

# for_each_server CHECK [ARGS...]: runs CHECK PROGRAM ARGS for each program,
# each in a directory of its own (the helpers put their files in
# BATS_TEST_TMPDIR), stopping everything the first started before the next
# begins. The name printed first tells, on a failure, which program failed.
for_each_server() {
    local check=$1 prog top=$BATS_TEST_TMPDIR
    local BATS_TEST_TMPDIR
    shift
    for prog in "${SERVERS[@]}"; do
        echo "# $prog"
        BATS_TEST_TMPDIR=$top/$prog
        mkdir -p "$BATS_TEST_TMPDIR"
        "$check" "$prog" "$@"
        exec 6>&- 7>&-
        stop_all
    done
}

# load_succeeded WANT: the last run_load exited 0 and printed WANT.
# shellcheck disable=SC2154 # stderr is set by Bats run --separate-stderr
load_succeeded() {
    [[ $status -eq 0 && $output == *"$1"* ]] ||
        { echo "load exit $status: $output $stderr"; return 1; }
}

# census: reads the load tool's first line (after its greetings) from
# LOAD_LINE into CONNECTED, CLOSED and SILENT.
census() {
    [[ $LOAD_LINE =~ ^connected\ ([0-9]+)\ closed\ ([0-9]+)\ silent\ ([0-9]+)$ ]] ||
        { echo "census: $LOAD_LINE"; return 1; }
    CONNECTED=${BASH_REMATCH[1]} CLOSED=${BASH_REMATCH[2]} SILENT=${BASH_REMATCH[3]}
}

# client_port: the port of the client on fd 7, from the narration.
client_port() {
    local line
    line=$(grep -m 1 -E '^client 127\.0\.0\.1:[0-9]+ connected on fd 7 ' "$SERVER_OUT")
    line=${line#client 127.0.0.1:}
    echo "${line%% *}"
}

# time_wait_count CLIENT_PORT: TIME_WAIT sockets of that one connection (its
# server side, then its client side). The full four-tuple matters: after the
# load tests, thousands of older TIME_WAIT sockets remain, and their ports are
# drawn from the same range as the port the kernel gives a new listener.
time_wait_count() {
    echo $(($(count_sockets time-wait "sport = :$PORT and dport = :$1") +
        $(count_sockets time-wait "sport = :$1 and dport = :$PORT")))
}

# server_time_wait CLIENT_PORT: the server's side of it is in TIME_WAIT.
server_time_wait() {
    (($(count_sockets time-wait "sport = :$PORT and dport = :$1") == 1))
}

# ---- the command line ----------------------------------------------------------

check_help() {
    assert_help "$1"
    [[ $output == *"-m MAXCLIENTS"* ]]
    [[ $output == *"-t SECONDS"* ]]
    [[ $output == *"-k IDL,INT,CNT"* ]]
    [[ $output == *"-L "* ]]
}

@test "stage6: -h prints the usage to stdout and exits 0, listing -m, -t, -k and -L" {
    for_each_server check_help
}

check_usage() {
    local v
    assert_bad_ports "$1"
    assert_bad_addresses "$1"
    assert_usage_error "$1" -b 0
    for v in 0 -1 abc 1000001 ""; do
        assert_usage_error "$1" -m "$v"
    done
    for v in 0 -1 2s 1000001 ""; do
        assert_usage_error "$1" -t "$v"
    done
    for v in "" 1 1,2 1,2,3,4 0,1,1 1,0,1 1,1,0 1,1,128 32768,1,1 a,b,c 1,,1 " 1,1,1"; do
        assert_usage_error "$1" -k "$v"
    done
}

@test "stage6: bad ports, addresses, backlogs, -m, -t and -k values exit 2" {
    for_each_server check_usage
}

check_port_zero() {
    assert_port_zero "$1"
}

@test "stage6: -p 0 listens on a port the kernel chose, shown in the readiness line" {
    for_each_server check_port_zero
}

check_raises_limit() {
    start_server_limited 64:256 "$1"
    grep -q "^descriptor limit raised from 64 to 256 " "$SERVER_OUT"
    grep -qE "^Max open files +256 +256 " "/proc/$SERVER_PID/limits"
}

@test "stage6: raises its soft descriptor limit to the hard limit at start, and says so" {
    skip_under_valgrind "valgrind keeps the top of the descriptor limit for itself and reports a lower RLIMIT_NOFILE"
    for_each_server check_raises_limit
}

# ---- the echo ------------------------------------------------------------------

check_text() {
    start_server "$1"
    assert_echoes_text
    # STYLE 9: the narration lines up with /proc/PID/fd (3 is the listener,
    # 4 and 5 the self-pipe, 6 the reserve).
    grep -qE '^client 127\.0\.0\.1:[0-9]+ connected on fd 7 \(clients: 1\)$' "$SERVER_OUT"
    wait_until "$WAIT_LIMIT" grep -qE '^client 127\.0\.0\.1:[0-9]+ on fd 7 left: 12 bytes echoed \(clients: 0\)$' "$SERVER_OUT"
}

@test "stage6: echoes a line of text, and narrates the client's address and descriptor" {
    skip_under_valgrind "valgrind's log holds fd 3, so every descriptor number is one higher"
    for_each_server check_text
}

check_nul_bytes() {
    local in=$BATS_TEST_TMPDIR/nul.in out=$BATS_TEST_TMPDIR/nul.out
    start_server "$1" -q
    printf '\0a\0\0b\nc\0' >"$in"
    timeout "$WAIT_LIMIT" nc -N 127.0.0.1 "$PORT" <"$in" >"$out"
    cmp "$in" "$out"
}

@test "stage6: data with NUL bytes comes back as it was sent" {
    for_each_server check_nul_bytes
}

check_10mib() {
    start_server "$1" -q
    run_load echo -b 10485760
    load_succeeded "verified 1 of 1 clients"
}

@test "stage6: 10 MiB of random binary data echoed byte for byte while the client writes and reads at once" {
    for_each_server check_10mib
}

check_many_streams() {
    start_server "$1" -q
    run_load echo -c 100 -b 262144
    load_succeeded "verified 100 of 100 clients"
}

@test "stage6: many clients at once: 100 clients each stream 256 KiB at the same time, all exact" {
    for_each_server check_many_streams
}

check_thousand() {
    local base
    start_server "$1" -q
    base=$(fd_count "$SERVER_PID")
    start_load crowd echo -c 1000 -b 1024
    wait_load_line '^connected' 60
    [[ $LOAD_LINE == "connected 1000 closed 0 silent 0" ]]
    # All 1000 held at once: one descriptor each.
    [[ $(fd_count "$SERVER_PID") -eq $((base + 1000)) ]]
    release_load
    finish_load
    [[ $LOAD_STATUS -eq 0 ]]
    grep -q "^verified 1000 of 1000 clients$" "$LOAD_OUT"
    wait_until "$WAIT_LIMIT" fd_count_is "$SERVER_PID" "$base"
}

@test "stage6: 1,000 clients connected at once, each echoing" {
    for_each_server check_thousand
}

check_half_close() {
    start_server "$1"
    run echo_once $'one\ntwo\nthree\n'
    [ "$output" = $'one\ntwo\nthree' ]
    wait_until "$WAIT_LIMIT" grep -q "left: 14 bytes echoed" "$SERVER_OUT"
    # 32 clients with small socket buffers send 32 KiB, 64 KiB, ... 1 MiB
    # without reading, shut down their sending side, and only then read:
    # some reach end of stream while the server still holds their echo.
    run_load flood -s -c 32 -b 1048576
    load_succeeded "verified 17301504 bytes"
}

@test "stage6 F37: half-close: every byte still owed is delivered before the server closes" {
    for_each_server check_half_close
}

check_backpressure() {
    local before during sent t0 elapsed
    start_server "$1" -q
    before=$(rss_kb "$SERVER_PID")
    start_load flood flood -b 67108864
    wait_load_line '^sent [0-9]+ of 67108864 bytes without reading' 30
    sent=${LOAD_LINE#sent }
    sent=${sent%% *}
    during=$(rss_kb "$SERVER_PID")
    echo "$1: took $sent bytes it could not echo yet; RSS $before -> $during KiB"
    # The server stopped reading: the client could not send it all...
    ((sent < 67108864))
    # ...so the server's memory stayed bounded (the kernel holds the rest).
    ((during - before < 8192))
    # Another client is answered at once.
    t0=$(now_ms)
    assert_echoes_text
    elapsed=$(($(now_ms) - t0))
    echo "$1: another client answered in $elapsed ms"
    ((elapsed < 1000))
    # Then all 64 MiB come back, exact.
    release_load
    finish_load 90
    [[ $LOAD_STATUS -eq 0 ]]
    grep -q "^verified 67108864 bytes$" "$LOAD_OUT"
}

@test "stage6 F35/F36: a client sends 64 MiB without reading: memory bounded, others served, all 64 MiB come back" {
    for_each_server check_backpressure
}

# ---- errors and limits -----------------------------------------------------------

check_hangups() {
    start_server "$1" -q
    assert_survives_hangups
}

@test "stage6 F38: clients that reset or hang up end only themselves; the server goes on" {
    for_each_server check_hangups
}

check_resets() {
    local base
    start_server "$1" -q
    base=$(fd_count "$SERVER_PID")
    run_load reset -c 200
    load_succeeded "reset 200"
    wait_until "$WAIT_LIMIT" fd_count_is "$SERVER_PID" "$base"
    assert_echoes_text
    is_running "$SERVER_PID"
}

@test "stage6 F38: 200 clients that reset (SO_LINGER 0) at once end only themselves" {
    for_each_server check_resets
}

check_epipe() {
    local base
    start_server "$1" -q
    base=$(fd_count "$SERVER_PID")
    # 32 clients (small buffers) send 32 KiB to 1 MiB without reading,
    # shut down their sending side, then reset: the reset lands after end
    # of stream, so the server's next write to them fails with EPIPE, which
    # would raise SIGPIPE and end the server were it not ignored.
    run_load flood -r -s -c 32 -b 1048576
    load_succeeded "reset 32"
    is_running "$SERVER_PID"
    wait_until "$WAIT_LIMIT" fd_count_is "$SERVER_PID" "$base"
    grep -q ": EPIPE (Broken pipe)$" "$SERVER_ERR"
    assert_echoes_text
}

@test "stage6 F38: clients that half-close and then reset while owed output: EPIPE ends only them (SIGPIPE ignored)" {
    for_each_server check_epipe
}

check_cycles() {
    local base
    start_server "$1" -q
    base=$(fd_count "$SERVER_PID")
    run_load cycles -c 2000
    load_succeeded "cycles 2000"
    wait_until "$WAIT_LIMIT" fd_count_is "$SERVER_PID" "$base"
}

@test "stage6: 2,000 connect/echo/close cycles leave no descriptor behind" {
    for_each_server check_cycles
}

check_out_of_descriptors() {
    local cpu
    # 32 descriptors: 7 for the server itself, 25 for clients; -m allows
    # more, so accept() meets EMFILE.
    start_server_limited 32:32 "$1" -m 1000
    start_load crowd echo -c 60 -b 100
    wait_load_line '^connected' 30
    census
    echo "$1: $CONNECTED served, $CLOSED refused, $SILENT left hanging"
    ((CONNECTED >= 20 && CONNECTED + CLOSED == 60 && SILENT == 0))
    grep -qE '^out of descriptors \(EMFILE\): client 127\.0\.0\.1:[0-9]+ refused' "$SERVER_OUT"
    # The listener is not left readable: no busy loop.
    cpu=$(cpu_percent "$SERVER_PID")
    echo "$1: CPU $cpu% with its descriptors used up"
    ((cpu < 10))
    release_load
    finish_load
    grep -q "^verified $CONNECTED of 60 clients$" "$LOAD_OUT"
    # Once they leave, new clients are served again.
    run_load echo -c 20
    load_succeeded "verified 20 of 20 clients"
}

@test "stage6 F38: out of descriptors (EMFILE): extra clients are refused at once, no busy loop, served again after" {
    skip_under_valgrind "valgrind takes fd 3 and part of the descriptor limit, so fewer clients fit in 32"
    for_each_server check_out_of_descriptors
}

@test "stage6 -m 1: a client over the limit is closed at once; the first keeps working" {
    for_each_server assert_max_one_client
}

check_idle_timeout() {
    local t0 elapsed cpu
    start_server "$1" -t 2
    open_held_client idle
    printf 'hi\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/idle.out" hi
    t0=$(now_ms)
    # Waiting for the deadline, the loop sleeps in poll()/select().
    cpu=$(cpu_percent "$SERVER_PID")
    ((cpu < 10))
    wait_until "$WAIT_LIMIT" grep -q "on fd 7 closed: idle too long (-t): 3 bytes echoed" "$SERVER_OUT"
    elapsed=$(($(now_ms) - t0))
    echo "$1: closed $elapsed ms after the last echo (-t 2)"
    ((elapsed >= 1500 && elapsed < 4000))
}

@test "stage6 -t 2: a client idle for 2 s is closed, not before; the server sleeps until then" {
    skip_under_valgrind "valgrind's log holds fd 3, so every descriptor number is one higher"
    for_each_server check_idle_timeout
}

check_linger() {
    local cport
    # Without -L the server closes first (the -t deadline), so its side
    # waits in TIME_WAIT (F27).
    start_server "$1" -t 1
    open_held_client plain
    printf 'x\n' >&6
    wait_until "$WAIT_LIMIT" grep -q "idle too long" "$SERVER_OUT"
    cport=$(client_port)
    exec 6>&- # nc's input ends: it closes its side too, and exits
    wait_until "$WAIT_LIMIT" has_exited "$HELD_PID"
    wait_until "$WAIT_LIMIT" server_time_wait "$cport"
    # With -L the close is a reset: no TIME_WAIT on either side (F28).
    start_server "$1" -t 1 -L
    open_held_client reset
    printf 'x\n' >&6
    wait_until "$WAIT_LIMIT" grep -q "idle too long" "$SERVER_OUT"
    cport=$(client_port)
    exec 6>&-
    wait_until "$WAIT_LIMIT" has_exited "$HELD_PID"
    [[ $(time_wait_count "$cport") -eq 0 ]]
}

@test "stage6 -L F27/F28: the server that closes first keeps TIME_WAIT; with SO_LINGER 0 it resets instead" {
    for_each_server check_linger
}

# keepalive_timer: what ss says of the timer on the server's side of the
# client on fd 7.
keepalive_timer() {
    run ss -Htno state established "sport = :$PORT and dport = :$(client_port)"
}

check_keepalive() {
    start_server "$1" -k 7,3,2
    open_held_client ka
    printf 'x\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/ka.out" x
    keepalive_timer
    # ss shows the keepalive timer, due within IDL (7 s). (Some versions of
    # ss write its seconds as "6.984ms".)
    [[ $output =~ timer:\(keepalive,([0-9]+)(\.[0-9]+)?(sec|ms), ]] ||
        { echo "ss: $output"; return 1; }
    ((BASH_REMATCH[1] < 7))
    exec 6>&-
    # Without -k, no keepalive timer.
    start_server "$1"
    open_held_client plain
    printf 'x\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/plain.out" x
    keepalive_timer
    [[ -n $output && $output != *keepalive* ]]
}

@test "stage6 -k F29: TCP keepalive is on, with its idle time, only when asked" {
    for_each_server check_keepalive
}

# ---- sleeping and stopping ---------------------------------------------------------

check_idle_cpu() {
    local cpu
    start_server "$1" -q
    start_load idle echo -c 100 -b 16
    wait_load_line '^connected 100 closed 0 silent 0$'
    cpu=$(cpu_percent "$SERVER_PID")
    echo "$1 idle CPU with 100 clients connected: $cpu%"
    # Stage 5 burns a whole CPU here (its test wants over 30%).
    ((cpu < 5))
    release_load
    finish_load
    [[ $LOAD_STATUS -eq 0 ]]
}

@test "stage6 F33: while nobody sends, the server sleeps: CPU near 0% (stage 5: 100%)" {
    for_each_server check_idle_cpu
}

check_idle_memory() {
    local before after per
    start_server "$1" -q
    before=$(rss_kb "$SERVER_PID")
    start_load idle echo -c 1000 -b 16
    wait_load_line '^connected 1000 closed 0 silent 0$' 60
    after=$(rss_kb "$SERVER_PID")
    per=$(((after - before) * 1024 / 1000))
    echo "$1: $per bytes of server memory per idle connection"
    ((per <= 1024))
    release_load
    finish_load
    [[ $LOAD_STATUS -eq 0 ]]
}

@test "stage6: an idle connection costs 1 KiB of server memory or less (RSS over 1,000 of them)" {
    for_each_server check_idle_memory
}

check_signals() {
    local sig t0 elapsed
    for sig in TERM INT; do
        start_server "$1"
        start_load "held$sig" echo -c 50 -b 16
        wait_load_line '^connected 50 closed 0 silent 0$'
        t0=$(now_ms)
        stop_process "$SERVER_PID" "$sig"
        elapsed=$(($(now_ms) - t0))
        echo "$1: SIG$sig with 50 clients: exit $STOP_STATUS after $elapsed ms"
        [[ $STOP_STATUS == 0 ]]
        ((elapsed < 1000))
        grep -q "^SIG$sig: no longer accepting; closing 50 clients$" "$SERVER_OUT"
        tail -n 1 "$SERVER_OUT" | grep -qx stopped
        release_load
        finish_load
    done
}

@test "stage6 F41: SIGTERM and SIGINT with clients connected: everyone closed, exit 0 within a second" {
    for_each_server check_signals
}

# ---- one program only ------------------------------------------------------------

@test "stage6_select F39: a client on a descriptor at or above FD_SETSIZE is closed at once, saying why; the others echo" {
    skip_under_valgrind "valgrind's log holds fd 3, so every descriptor number is one higher, so one client fewer fits below FD_SETSIZE"
    hard_nofile_at_least 1200 || skip "the hard descriptor limit is below 1200"
    start_server stage6_select -m 2000
    start_load crowd echo -c 1100 -b 1024
    wait_load_line '^connected' 60
    census
    echo "$CONNECTED served, $CLOSED refused, $SILENT left hanging"
    # Descriptors 7 to 1023 serve clients; every later one gets fd 1024.
    ((CONNECTED == 1017 && CLOSED == 83 && SILENT == 0))
    grep -q "refused: it got fd 1024, and select() cannot watch a descriptor at or above FD_SETSIZE (1024)" "$SERVER_OUT"
    release_load
    finish_load
    grep -q "^verified 1017 of 1100 clients$" "$LOAD_OUT"
    assert_echoes_text
    # Without -m, select's limit is FD_SETSIZE minus its own 7 descriptors.
    start_server stage6_select
    grep -q "^client limit (-m): 1017;" "$SERVER_OUT"
}

@test "stage6_poll: 10,000 clients connected at once, each echoing, under 1 KiB of server memory each" {
    hard_nofile_at_least 10100 || skip "the hard descriptor limit is below 10100"
    local base before after per
    start_server stage6_poll -q
    base=$(fd_count "$SERVER_PID")
    before=$(rss_kb "$SERVER_PID")
    start_load ten echo -c 10000 -b 64 -T 110
    wait_load_line '^connected' 100
    [[ $LOAD_LINE == "connected 10000 closed 0 silent 0" ]]
    [[ $(fd_count "$SERVER_PID") -eq $((base + 10000)) ]]
    after=$(rss_kb "$SERVER_PID")
    per=$(((after - before) * 1024 / 10000))
    echo "stage6_poll: $per bytes of server memory per idle connection (10,000)"
    ((per <= 1024))
    release_load
    finish_load 100
    [[ $LOAD_STATUS -eq 0 ]]
    grep -q "^verified 10000 of 10000 clients$" "$LOAD_OUT"
}

check_addr_in_use() {
    assert_addr_in_use "$1"
    assert_addr_in_use "$1" -R
    assert_reuseaddr "$1"
}

@test "stage6 F10/F11: a listening port is EADDRINUSE with or without -R; a TIME_WAIT one only without SO_REUSEADDR" {
    for_each_server check_addr_in_use
}

check_setup_fails() {
    assert_setup_fails "$1" "socket setsockopt getsockname listen sigaction" -p 0 -q
}

@test "stage6: a setup call that fails (socket, setsockopt, getsockname, listen, sigaction) exits 1 and names the call" {
    skip_under_valgrind "the preload library would stand in for valgrind's own calls"
    for_each_server check_setup_fails
}
