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

# darwin_build [UNAME]: builds every program in the copied tree as macOS
# would see it (tests/darwin/emulate.h: Darwin's feature-test rules, from
# reading Apple's headers), with the flags common/flags.mk chooses when
# uname -s says UNAME (default Darwin); no epoll there.
darwin_build() {
    run make -C "$TREE" UNAME_S="${1:-Darwin}" HAVE_EPOLL= \
        CFLAGS="-O0 -include $TREE/tests/darwin/emulate.h -U__linux__" all
}

@test "build: every program compiles under Darwin's feature-test rules (emulated), with the flags chosen for macOS" {
    copy_tree
    darwin_build
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ -x "$TREE/bin/stage6_select" ] && [ ! -e "$TREE/bin/stage6_epoll" ]
    [[ $output == *"stage6_epoll not built"* ]]
}

@test "build: without _DARWIN_C_SOURCE, a name Darwin hides under _POSIX_C_SOURCE (INADDR_LOOPBACK) fails the emulated macOS build, by name" {
    copy_tree
    darwin_build Linux
    [ "$status" -ne 0 ]
    [[ $output == *'poisoned "INADDR_LOOPBACK"'* ]]
}

# path_without NAME: a folder of links to every program on PATH but NAME,
# for a PATH on which NAME is missing; prints the folder.
path_without() {
    local dir=$BATS_TEST_TMPDIR/path-without-$1 d f
    mkdir -p "$dir"
    local IFS=:
    for d in $PATH; do
        for f in "$d"/*; do
            [[ -x $f && ${f##*/} != "$1" && ! -e $dir/${f##*/} ]] &&
                ln -s "$f" "$dir/${f##*/}"
        done
    done
    echo "$dir"
}

@test "build: make test with no nc on PATH stops at once with one line saying what to install, not dozens of failures" {
    local dir t0
    copy_tree
    dir=$(path_without nc)
    t0=$SECONDS
    run env PATH="$dir" make -C "$TREE" test
    echo "$output"
    [ "$status" -ne 0 ]
    ((SECONDS - t0 < 30))
    [[ $output == *"MISSING  nc "*"fix: "* ]]
    [[ $output == *"make test: stopping"* ]]
    [[ $output == *"0 passed, 1 failed"* ]]
    [[ $output != *"not ok"* ]]
}

@test "build: make doctor reports every check and exits 0 on a machine with what the tests need" {
    run make -s -C "$ROOT" doctor
    echo "$output"
    [ "$status" -eq 0 ]
    local name
    for name in compiler make bats nc machine nofile; do
        [[ $output == *"ok       $name "* ]] || { echo "no ok line for $name"; false; }
    done
}
