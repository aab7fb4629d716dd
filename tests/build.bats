#!/usr/bin/env bats
# The build: every stage folder builds on its own, header changes rebuild
# what includes them, and `make run` says plainly when stage 6 is missing.
# Each test works on a copy of the tree, so the checkout is never touched.

load helpers

# copy_tree [EXCLUDE]: copies the tracked sources (no build output) into
# $BATS_TEST_TMPDIR/tree, leaving out the folder EXCLUDE if given.
copy_tree() {
    local dest=$BATS_TEST_TMPDIR/tree
    mkdir -p "$dest"
    (cd "$ROOT" && tar -cf - --exclude=./bin --exclude=./build \
        --exclude="${1:-none}" common stage* Makefile tests) |
        tar -xf - -C "$dest"
    TREE=$dest
}

@test "build: each stage folder builds its program on its own" {
    copy_tree
    local dir
    for dir in "$TREE"/stage*/; do
        dir=${dir%/}
        run make -C "$dir"
        [ "$status" -eq 0 ] || { echo "$dir: $output"; false; }
        [ -x "$dir/$(basename "$dir")" ]
        run "$dir/$(basename "$dir")" -h
        [ "$status" -eq 0 ]
    done
}

@test "build: a change to common/common.h rebuilds every stage" {
    copy_tree
    run make -C "$TREE"
    [ "$status" -eq 0 ]
    # make -q: exit 0 when everything is up to date, 1 when something is not.
    run make -C "$TREE" -q all
    [ "$status" -eq 0 ]
    touch "$TREE/common/common.h"
    run make -C "$TREE" -q all
    [ "$status" -eq 1 ]
    run make -C "$TREE"
    [ "$status" -eq 0 ]
    local dir s
    for dir in "$TREE"/stage*/; do
        s=$(basename "$dir")
        [[ $output == *"-o build/$s/$s.o"* ]] || { echo "$s was not recompiled"; false; }
    done
}

@test "build: warnings are errors, whatever CFLAGS the user gives" {
    copy_tree
    printf 'static int unused_function(void) { return 0; }\n' >>"$TREE/stage1_socket/stage1_socket.c"
    run make -C "$TREE" CFLAGS=-O0 bin/stage1_socket
    [ "$status" -ne 0 ]
    [[ $output == *unused_function* ]]
}

@test "build: make run says plainly that stage 6 is not built yet, when it is not" {
    copy_tree stage6_poll
    run make -C "$TREE" run
    [ "$status" -ne 0 ]
    [[ $output == *"make run: stage 6 (the poll() echo server) is not built yet"* ]]
}

@test "build: make diff STAGE=3 shows what stage 3 adds: the listen() call" {
    run make -s -C "$ROOT" diff STAGE=3
    [ "$status" -eq 0 ]
    [[ ${lines[0]} == "--- stage2_bind/stage2_bind.c"* ]]
    [[ ${lines[1]} == "+++ stage3_listen/stage3_listen.c"* ]]
    [[ $output == *$'\n+    if (listen(fd, opt.backlog) == -1)'* ]]
}

@test "build: make diff without a stage from 2 to 6 says how to use it and fails" {
    local n
    for n in "" 1 7 x; do
        run make -s -C "$ROOT" diff STAGE="$n"
        [ "$status" -ne 0 ]
        [[ $output == *"make diff: STAGE must be 2 to 6, e.g. make diff STAGE=3"* ]]
    done
}

@test "build: make run PORT=0 starts the echo server on a port the kernel chooses; PORT from the environment is ignored" {
    copy_tree
    local out=$BATS_TEST_TMPDIR/run.out line port server
    spawn make -s -C "$TREE" run PORT=0 </dev/null >"$out" 2>&1
    wait_until 120 grep -q '^listening on 127.0.0.1:' "$out"
    # make's recipe exec()s the server, so it is make's only child; the
    # teardown stops it too if a check below fails.
    server=$(pgrep -P "$SPAWNED_PID")
    STARTED_PIDS+=("$server")
    [[ $(cat "/proc/$server/comm") == stage6_poll ]]
    line=$(grep -m 1 '^listening on ' "$out")
    port=${line##*:}
    [[ $port != 6969 ]]
    PORT=$port assert_echoes_text
    # SIGTERM ends the server with status 0, and make with it.
    kill -TERM "$server"
    wait_until "$WAIT_LIMIT" has_exited "$SPAWNED_PID"
    wait "$SPAWNED_PID"
    PORT=1 run make -s -n -C "$TREE" run
    [[ $output == *"-a 127.0.0.1 -p 6969"* ]]
    run make -s -C "$TREE" run PORT=x
    [ "$status" -ne 0 ]
    [[ $output == *"make run: PORT must be a number from 0 to 65535, e.g. make run PORT=0"* ]]
}
