#!/usr/bin/env bats
# Tests the bug hunt (make lab, lab/README.md) found missing: each was
# written because a variant in lab/ broke a rule and no other suite noticed.
# They hold the real programs to that rule like any other test, and run with
# the rest in make test. Each names the variant that showed the hole.

load helpers

# ---- stage 6: the signal that lands just before the wait (lab/signal-flag) ----

SERVERS=(stage6_poll stage6_select)
[[ -x $BIN/stage6_epoll ]] && SERVERS+=(stage6_epoll)

# window_env PROGRAM GATE: the environment (env's arguments) that preloads
# build/tools/libwindow.so (tests/fault/window.c) for PROGRAM alone, with its
# window opening once GATE exists; a sanitizer build wants its runtime first
# in the list of libraries, and works second once told not to check.
window_env() {
    echo "LD_PRELOAD=$TOOLS/libwindow.so" "WINDOW_PROGRAM=$1" "WINDOW_GATE=$2" \
        "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
}

check_signal_in_window() {
    local prog=$1 dir=$BATS_TEST_TMPDIR/$1 t0 elapsed
    mkdir -p "$dir"
    # The gate is there from the start: the loop's first wait holds the
    # window open (-q: no narration, so no deadline wakes the loop either).
    : >"$dir/gate"
    printf '#!/bin/sh\nexec env %s "%s" "$@"\n' \
        "$(window_env "$prog" "$dir/gate")" "$BIN/$prog" >"$dir/$prog"
    chmod +x "$dir/$prog"
    BIN=$dir start_server "$prog" -q
    grep -q libwindow.so "/proc/$SERVER_PID/maps" ||
        { echo "$prog: the preload is not loaded"; return 1; }
    wait_until "$WAIT_LIMIT" test -e "$dir/gate.open" ||
        { echo "$prog: the window never opened"; return 1; }
    # Past its last look, not yet in its wait: the signal lands now.
    t0=$(now_ms)
    kill -TERM "$SERVER_PID"
    wait_until 3 has_exited "$SERVER_PID" ||
        { echo "$prog: still running 3 s after SIGTERM: the signal was lost before the wait"; return 1; }
    elapsed=$(($(now_ms) - t0))
    STOP_STATUS=0
    wait "$SERVER_PID" || STOP_STATUS=$?
    echo "$prog: exit $STOP_STATUS, $elapsed ms after SIGTERM"
    [[ $STOP_STATUS == 0 ]]
}

@test "stage6 F41: a SIGTERM that lands after the loop's last look and before its wait (the moment held open by a preload) still ends the server at once" {
    skip_under_qemu
    local prog
    for prog in "${SERVERS[@]}"; do
        check_signal_in_window "$prog"
        stop_all
    done
}

# ---- stages 4 and 5: short writes (lab/write-once, lab/short-write-5, -------
# ---- lab/read-over-owed) ------------------------------------------------------
# On loopback a write() to a blocking socket, or one with room, almost never
# comes back short, so the suites' echo tests pass whether or not the code
# handles it. The fault library makes every write() to a client take only the
# first half of what it is given (write:SHORT@1+), as a nearly full send
# buffer does.

@test "stage4 F35: every write() short (fault library): write_all() writes the rest, and 1 MiB comes back exact" {
    start_faulty_server write:SHORT@1+ stage4_accept -q
    assert_echoes_file 1048576
    [ ! -s "$SERVER_ERR" ]
}

@test "stage5 F35/F36: every write() short (fault library): the rest is kept for the next round, and nothing more is read until it is sent: 1 MiB comes back exact" {
    start_faulty_server write:SHORT@1+ stage5_nonblock -q
    assert_echoes_file 1048576
    [ ! -s "$SERVER_ERR" ]
}
