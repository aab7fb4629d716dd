#!/usr/bin/env bats
# The load generator of make bench (tests/bench/bench.c): its integrity
# check passes on a correct echo server and fails, saying which client, at
# which byte, what was expected and what came, on broken ones. The servers
# are the bench's own builds (build/bench, made by `make tools`): the epoll
# reference and two faulty builds of it, which spoil byte 1000 of every
# connection's echo (broken_flip flips a bit of it, broken_cut echoes
# nothing from it on). They are started here, on port 0, and stopped by
# PID; the bench runs its quick cases with short windows against them.
# Then pollcost (tests/bench/pollcost.c), the poll() cost curve: its rows,
# and what it says when the descriptor limit cannot hold 10,000.
# BENCH_BIN (default build/bench) says where those programs are.

# shellcheck disable=SC2154 # stderr: set by Bats run --separate-stderr
load helpers

BENCH=${BENCH_BIN:-build/bench}
[[ $BENCH == /* ]] || BENCH=$ROOT/$BENCH

setup() {
    [[ -x $BENCH/bench && -x $BENCH/broken_cut ]] ||
        { echo "build/bench is not built: run make tools" >&2; return 1; }
}

# bench_against PROGRAM: starts build/bench/PROGRAM and runs the quick
# bench (100 ms windows) against it, as Bats `run` (status, output,
# stderr).
bench_against() {
    BIN=$BENCH start_server "$1" -q
    run --separate-stderr timeout 30 "$BENCH/bench" -Q -w 100 -n "$1" \
        -P "$PORT" -i "$SERVER_PID"
}

@test "bench: every byte comes back from the epoll reference server" {
    bench_against epoll_echo
    [[ $status -eq 0 ]] || { echo "exit $status: $stderr"; return 1; }
    # One row per case: idle, 3 ping-pong, 2 stream, hold-idle, hold-busy.
    [[ ${#lines[@]} -eq 8 ]] || { echo "rows: $output"; return 1; }
    [[ $output == *"epoll_echo,pingpong,100,100,64,"*",rt/s,"* ]] ||
        { echo "no ping-pong 100 row: $output"; return 1; }
    [[ $output == *"epoll_echo,hold-idle,200,"* ]] ||
        { echo "no hold row: $output"; return 1; }
    is_running "$SERVER_PID" || { echo "the server died"; return 1; }
}

@test "bench: a flipped byte fails the run, naming the client, the byte, expected and got" {
    bench_against broken_flip
    [[ $status -eq 1 ]] || { echo "exit $status, want 1: $stderr"; return 1; }
    [[ $stderr =~ "broken_flip: pingpong 1: client "[0-9]+": byte 1000 of its stream: expected 0x"([0-9a-f]{2})", got 0x"([0-9a-f]{2}) ]] ||
        { echo "stderr: $stderr"; return 1; }
    # The lowest bit, flipped: the two bytes differ in it alone.
    (((16#${BASH_REMATCH[1]} ^ 16#${BASH_REMATCH[2]}) == 1)) ||
        { echo "not one bit apart: $stderr"; return 1; }
}

@test "bench: missing bytes fail the run, naming the client and the bytes missing" {
    bench_against broken_cut
    [[ $status -eq 1 ]] || { echo "exit $status, want 1: $stderr"; return 1; }
    [[ $stderr =~ "broken_cut: pingpong 1: client "[0-9]+": end of stream with bytes 1000..1023 missing (1024 sent, 1000 came back)" ]] ||
        { echo "stderr: $stderr"; return 1; }
}

@test "bench: it starts a server itself, and stops it with status 0 at the end" {
    run --separate-stderr timeout 30 "$BENCH/bench" -Q -w 100 -x hold=skipped -- \
        "$BENCH/epoll_echo"
    [[ $status -eq 0 ]] || { echo "exit $status: $stderr"; return 1; }
    [[ ${lines[-1]} == "epoll_echo,hold-busy,200,10,64,,,,,,,0,,skipped" ]] ||
        { echo "last row: ${lines[-1]}"; return 1; }
}

@test "pollcost: a row for poll(), poll() with the ready one last and epoll_wait() at each N" {
    [[ -x $BENCH/pollcost ]] || { echo "build/bench/pollcost is not built: run make tools"; return 1; }
    run --separate-stderr timeout 60 "$BENCH/pollcost" -Q
    [[ $status -eq 0 ]] || { echo "exit $status: $stderr"; return 1; }
    [[ ${lines[0]} == "call,n,us_per_call,min_us,max_us,calls,note" ]] ||
        { echo "header: ${lines[0]}"; return 1; }
    # 3 calls x 4 sizes (epoll_wait is Linux's: 2 x 4 elsewhere).
    local calls=3
    [[ $(uname -s) == Linux ]] || calls=2
    [[ ${#lines[@]} -eq $((1 + 4 * calls)) ]] || { echo "rows: $output"; return 1; }
    # Every row has its figures, or says n/a (a descriptor limit too low for
    # 10,000, which pollcost also says on stderr).
    local row
    for row in "${lines[@]:1}"; do
        [[ $row =~ ^(poll|poll-ready-last|epoll_wait),(10|100|1000|10000),[0-9]+\.[0-9]{3},[0-9.]+,[0-9.]+,[0-9]+,$ ||
            $row =~ ,,,,,n/a:\ the\ descriptor\ limit ]] || { echo "row: $row"; return 1; }
    done
    [[ $output == *"poll,10,"[0-9]* ]] || { echo "no poll over 10: $output"; return 1; }
}

@test "pollcost: with a hard limit too low for 10,000 it says so, measures what fits and exits 0" {
    [[ -x $BENCH/pollcost ]] || { echo "build/bench/pollcost is not built: run make tools"; return 1; }
    # Bats runs the function in a subshell: the limit stays there.
    low_limit() { ulimit -n 600 && timeout 60 "$BENCH/pollcost" -Q; }
    run --separate-stderr low_limit
    [[ $status -eq 0 ]] || { echo "exit $status: $stderr"; return 1; }
    [[ $stderr == *"pollcost: the descriptor limit is 600 (the hard limit)"* ]] ||
        { echo "stderr: $stderr"; return 1; }
    [[ $output == *"poll,100,"[0-9]* ]] || { echo "no poll over 100: $output"; return 1; }
    [[ $output == *"poll,1000,,,,,n/a: the descriptor limit (600) is too low"* ]] ||
        { echo "no n/a row for 1000: $output"; return 1; }
}

@test "bench: bad usage exits 2 with the usage line" {
    run --separate-stderr "$BENCH/bench" -w 5 -P 1
    [[ $status -eq 2 && $stderr == "usage: bench "* ]] ||
        { echo "exit $status: $stderr"; return 1; }
    run --separate-stderr "$BENCH/bench"
    [[ $status -eq 2 ]] || { echo "exit $status"; return 1; }
}
