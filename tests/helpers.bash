# helpers.bash - what every suite shares. Load it with `load helpers`.
#
# Servers start the way a user starts them: on port 0, with the port read
# from their readiness line. Every wait has a bound, and every process a test
# starts is recorded and stopped by its PID in teardown.
#
# Environment: STAGE_BIN (default bin) is where the stage programs are, e.g.
# build/sanitize/bin for `make check`; TOOLS_BIN (default build/tools) holds
# the C helpers built from tests/tools/.

bats_require_minimum_version 1.5.0

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
BIN=${STAGE_BIN:-bin}
[[ $BIN == /* ]] || BIN=$ROOT/$BIN
TOOLS=${TOOLS_BIN:-build/tools}
[[ $TOOLS == /* ]] || TOOLS=$ROOT/$TOOLS

# How long any single wait may take, in seconds.
WAIT_LIMIT=${WAIT_LIMIT:-10}

# PIDs of everything started in the background by this test.
STARTED_PIDS=()

teardown() {
    stop_all
}

# wait_until SECONDS COMMAND [ARGS...]: runs COMMAND every 20 ms until it
# succeeds (returns 0) or SECONDS pass (returns 1).
wait_until() {
    local limit=$1 deadline
    shift
    deadline=$((SECONDS + limit))
    until "$@"; do
        ((SECONDS <= deadline)) || return 1
        sleep 0.02
    done
}

# is_running PID: the process exists and has not exited. (Bash reaps its
# background children as they end, so an ended one is gone, not a zombie.)
is_running() {
    kill -0 "$1" 2>/dev/null
}

# has_exited PID: the opposite, for wait_until.
has_exited() {
    ! kill -0 "$1" 2>/dev/null
}

# exited_or_zombie PID: has_exited, or ended and not yet reaped (state Z).
exited_or_zombie() {
    has_exited "$1" || [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) == Z ]]
}

# spawn COMMAND [ARGS...]: starts COMMAND in the background with only fds 0,
# 1 and 2 open, as from a user's shell (Bats keeps descriptors of its own
# open, and a server that inherited them would number its sockets
# differently and keep Bats waiting), records its PID for teardown, and
# leaves it in SPAWNED_PID. Redirect its I/O at the call site. The explicit
# <&0 matters: without job control, bash gives a background command
# /dev/null as stdin unless the command itself redirects it.
spawn() {
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            # (The directory's own descriptor is listed, but already closed.)
            if ((fd > 2)) && [[ -e /proc/self/fd/$fd ]]; then
                eval "exec $fd>&-"
            fi
        done
        exec "$@"
    ) <&0 &
    SPAWNED_PID=$!
    STARTED_PIDS+=("$SPAWNED_PID")
}

# start_server PROGRAM [ARGS...]: starts $BIN/PROGRAM -p 0 ARGS (a -p in ARGS
# wins, as getopt takes the last), waits for its readiness line, and sets:
#   SERVER_PID   its PID
#   SERVER_OUT   the file holding its stdout (SERVER_ERR: stderr)
#   SERVER_ADDR  the address from the readiness line, without brackets
#   PORT         the port from the readiness line
# Fails the test if the line does not come within WAIT_LIMIT seconds.
start_server() {
    local prog=$1 verb="listening on"
    shift
    [[ $prog == stage2_bind ]] && verb="bound to"
    SERVER_OUT=$(mktemp "$BATS_TEST_TMPDIR/$prog.out.XXXXXX")
    SERVER_ERR=${SERVER_OUT/.out./.err.}
    spawn "$BIN/$prog" -p 0 "$@" </dev/null >"$SERVER_OUT" 2>"$SERVER_ERR"
    SERVER_PID=$SPAWNED_PID
    if ! wait_until "$WAIT_LIMIT" grep -q "^$verb " "$SERVER_OUT"; then
        echo "no '$verb' line from $prog within $WAIT_LIMIT s" >&2
        echo "stdout:" >&2
        cat "$SERVER_OUT" >&2
        echo "stderr:" >&2
        cat "$SERVER_ERR" >&2
        return 1
    fi
    local line
    line=$(grep -m 1 "^$verb " "$SERVER_OUT")
    line=${line#"$verb "}
    PORT=${line##*:}
    SERVER_ADDR=${line%:*}
    SERVER_ADDR=${SERVER_ADDR#[}
    SERVER_ADDR=${SERVER_ADDR%]}
}

# start_server_fresh_port PROGRAM [ARGS...]: start_server, for a test that
# counts the TIME_WAIT records of its server's port: the kernel may hand out
# a port that still has records of an earlier test's connections (60 s), so
# a port with any is given back and another taken (at most 10 tries).
start_server_fresh_port() {
    local try
    for try in 1 2 3 4 5 6 7 8 9 10; do
        start_server "$@" || return 1
        if (($(count_sockets time-wait "sport = :$PORT or dport = :$PORT") == 0)); then
            return 0
        fi
        echo "port $PORT still has TIME_WAIT records (try $try); another one" >&2
        stop_process "$SERVER_PID"
    done
    echo "start_server_fresh_port: no port without TIME_WAIT records in 10 tries" >&2
    return 1
}

# on_terminal COMMAND: runs COMMAND (a string, as for sh -c) on a terminal
# of its own: script(1) gives it a pseudo-terminal, writes its screen to
# TERM_OUT and types on it what type_keys sends; sets TERM_PID. Skips the
# test where there is no script(1). script runs COMMAND through $SHELL -c,
# or sh -c where SHELL is unset (as under CI); dash then waits for the
# program instead of becoming it, and a Ctrl-C typed on the terminal would
# kill that shell too (status 130, whatever the program did). The `exec`
# makes the program the terminal's only process, as when a learner types
# the command at a prompt.
on_terminal() {
    command -v script >/dev/null 2>&1 ||
        skip "no 'script' command (util-linux) to give the program a terminal"
    local fifo=$BATS_TEST_TMPDIR/keys
    TERM_OUT=$BATS_TEST_TMPDIR/screen
    [[ -p $fifo ]] || mkfifo "$fifo"
    # Opening the fifo read-write on fd 5 first lets script open it without
    # blocking, and keeps it from seeing end of input between keystrokes.
    exec 5<>"$fifo"
    spawn script -qfec "exec $1" /dev/null <"$fifo" >"$TERM_OUT" 2>&1
    TERM_PID=$SPAWNED_PID
}

# type_keys KEYS: types KEYS on on_terminal's terminal (printf escapes:
# \n is Enter, \003 Ctrl-C, \004 Ctrl-D).
type_keys() {
    printf '%b' "$1" >&5
}

# terminal_ends: waits for on_terminal's program to end, fails unless its
# status is 0, and closes the keyboard.
terminal_ends() {
    wait_until "$WAIT_LIMIT" has_exited "$TERM_PID"
    wait "$TERM_PID"
    exec 5>&-
}

# stop_process PID [SIGNAL]: sends SIGNAL (default TERM), waits up to
# WAIT_LIMIT seconds for the process to end, and sets STOP_STATUS to its exit
# status (or to "still running" after a last SIGKILL).
stop_process() {
    local pid=$1 sig=${2:-TERM}
    # The process may end on its own at any moment, so a kill that finds it
    # gone is no failure (Bats runs tests under set -e), nor is its status.
    kill "-$sig" "$pid" 2>/dev/null || true
    if wait_until "$WAIT_LIMIT" has_exited "$pid"; then
        STOP_STATUS=0
        wait "$pid" 2>/dev/null || STOP_STATUS=$?
    else
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        STOP_STATUS="still running"
    fi
}

# stop_all: ends every process this test started that is still running.
stop_all() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        # make coverage (COVERAGE=1): SIGTERM first, so that a server ends
        # through its normal exit and writes its coverage data.
        # A process that ends between the check and the kill (a client
        # that the server has just closed) is no failure.
        if [[ -n ${COVERAGE:-} ]] && is_running "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            wait_until 2 exited_or_zombie "$pid" || true
        fi
        if is_running "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        # Its status is that of the kill; only the reaping matters here.
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
}

# ---- what the kernel shows (Linux, ss from iproute2) -------------------------

# listen_queue PORT: prints "RECVQ SENDQ" of the listening socket on PORT.
listen_queue() {
    ss -Hltn "sport = :$1" | awk 'NR == 1 { print $2, $3 }'
}

# count_sockets STATE FILTER: how many TCP sockets in STATE match FILTER,
# e.g. count_sockets syn-sent "dport = :$PORT".
count_sockets() {
    ss -Htn state "$1" "$2" | wc -l
}

# has_ipv6_loopback: ::1 is configured (some containers have no IPv6).
has_ipv6_loopback() {
    [[ -r /proc/net/if_inet6 ]] &&
        grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6
}

# ---- clients: nc, whatever its flavour ----------------------------------------
#
# The suites reach nc only through these helpers: the netcats in common use
# (tests/nc-flavour tells them apart) spell the same things differently.
#
#   flavour      send, half-close at end of    at end of input,     did it connect
#                input, read to the end        plain nc             (status only)
#   openbsd      nc -N                         keeps the connection nc -z
#   macos        nc                            half-closes          nc -z
#   ncat         nc                            half-closes          nc -z
#   busybox      nc                            half-closes          no -z: /dev/tcp
#   traditional  nc -q SECONDS (quits then)    keeps the connection nc -z; no IPv6
#
# So a client held open is one whose input stays open (nc_hold), with every
# flavour. (macOS's row is read from its source, not run: there -N takes a
# number; and the suites need Linux anyway.) Their messages are worded
# differently, and after a reset ncat exits 1 where the others exit 0, so a
# test judges what came back, what the server says and what ss shows: never
# nc's wording, nor its status where the server may reset the connection.

# nc_flavour: sets NC_FLAVOUR to the flavour of the nc on PATH, once (a
# value set beforehand wins); fails, saying so, when there is no nc.
nc_flavour() {
    [[ -n ${NC_FLAVOUR:-} ]] && return 0
    NC_FLAVOUR=$("$ROOT/tests/nc-flavour") ||
        { echo "no nc on PATH (make doctor says how to install one)" >&2; return 1; }
}

# nc_send_argv: sets NC_ARGV to the command (HOST PORT to follow) that sends
# its input, shuts down its sending side when the input ends, and copies
# what comes back to stdout until the server closes.
nc_send_argv() {
    nc_flavour || return 1
    case $NC_FLAVOUR in
    openbsd) NC_ARGV=(nc -N) ;;
    # -q: half-close at end of input, then quit once the server closes, or
    # that many seconds later (a bound no test waits for).
    traditional) NC_ARGV=(nc -q "${BATS_TEST_TIMEOUT:-120}") ;;
    macos | ncat | busybox) NC_ARGV=(nc) ;;
    *)
        echo "nc_send_argv: nc of unknown flavour '$NC_FLAVOUR' (tests/nc-flavour)" >&2
        return 1
        ;;
    esac
}

# nc_send [-t SECONDS] HOST PORT: sends stdin to HOST:PORT, shuts down the
# sending side at its end, and prints what comes back until the server
# closes; gives up after SECONDS (default WAIT_LIMIT) with status 124. nc's
# messages go to stderr; its status is non-zero when it could not connect,
# and (ncat) after a reset.
nc_send() {
    local limit=$WAIT_LIMIT
    if [[ $1 == -t ]]; then
        limit=$2
        shift 2
    fi
    nc_send_argv || return 1
    timeout "$limit" "${NC_ARGV[@]}" "$@"
}

# nc_hold NAME [FD]: starts nc_send's command to 127.0.0.1:$PORT in the
# background with its input a FIFO that this shell holds open, on FD or a
# new descriptor: the connection stays open, nothing half-closed, until
# that descriptor is closed (then nc half-closes and reads to the end).
# Write to the descriptor to send. What comes back goes to
# $BATS_TEST_TMPDIR/NAME.out. Sets HELD_FD and HELD_PID.
nc_hold() {
    local fifo=$BATS_TEST_TMPDIR/$1.fifo
    nc_send_argv || return 1
    mkfifo "$fifo" || return 1
    # shellcheck disable=SC2034 # HELD_FD is read by the suites
    if [[ -n ${2:-} ]]; then
        eval "exec $2<>\"\$fifo\""
        HELD_FD=$2
    else
        exec {HELD_FD}<>"$fifo"
    fi
    spawn "${NC_ARGV[@]}" 127.0.0.1 "$PORT" <"$fifo" >"$BATS_TEST_TMPDIR/$1.out"
    # shellcheck disable=SC2034 # HELD_PID is read by the suites
    HELD_PID=$SPAWNED_PID
}

# nc_connects HOST PORT [SECONDS]: connects to HOST:PORT and closes at once,
# sending nothing; succeeds when the connection was made within SECONDS
# (default 5), judged by the status alone: nc -z, or where the flavour has
# no -z for that address (busybox; traditional nc and IPv6) bash's /dev/tcp.
nc_connects() {
    local host=$1 port=$2 limit=${3:-5}
    nc_flavour || return 1
    case $NC_FLAVOUR:$host in
    busybox:* | traditional:*:*)
        # shellcheck disable=SC2016 # $0 and $1 are the child bash's
        timeout "$limit" bash -c ': <>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
        ;;
    *) timeout $((limit + 5)) nc -z -w "$limit" "$host" "$port" >/dev/null 2>&1 ;;
    esac
}

# nc_as_openbsd ARGS...: nc ARGS, as OpenBSD's nc spells them (the
# transcripts of TUTORIAL.md), done by the nc on PATH as the table of lesson
# 2 translates them: -N HOST PORT by nc_send's command, -z [-w SECONDS]
# HOST PORT by nc_connects (no output: the status tells), HOST PORT with no
# option as written.
nc_as_openbsd() {
    case $1 in
    -N)
        shift
        nc_send_argv && command "${NC_ARGV[@]}" "$@"
        ;;
    -z)
        shift
        if [[ $1 == -w ]]; then
            nc_connects "$3" "$4" "$2"
        else
            nc_connects "$@"
        fi
        ;;
    -*)
        echo "nc_as_openbsd: no translation for nc $*" >&2
        return 2
        ;;
    *) command nc "$@" ;;
    esac
}

# connect_error HOST PORT: one connect() to HOST:PORT, by bash's /dev/tcp
# (each nc flavour words a failure its own way); prints the system's text
# for its error (strerror: "Connection refused"), or "connected".
connect_error() {
    local msg
    # shellcheck disable=SC2016 # $0 and $1 are the child bash's
    if msg=$(timeout "$WAIT_LIMIT" bash -c ': <>"/dev/tcp/$0/$1"' "$1" "$2" 2>&1); then
        echo connected
    elif [[ -z $msg ]]; then
        echo "no answer within $WAIT_LIMIT s"
    else
        msg=${msg##*$'\n'}
        echo "${msg##*: }"
    fi
}

# closed_at_once: connects to 127.0.0.1:$PORT, sends nothing and keeps its
# side open (bash's /dev/tcp: with its input open, not every nc ends when
# the server closes), and succeeds when the server ends the connection
# within WAIT_LIMIT s without sending a byte.
closed_at_once() {
    local fd got="" rc=0
    exec {fd}<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    IFS= read -r -N 1 -t "$WAIT_LIMIT" got <&"$fd" || rc=$?
    exec {fd}>&-
    # read: status 1 at end of stream (or on a reset), above 128 on timeout.
    if ((rc != 1)) || [[ -n $got ]]; then
        echo "the server did not close at once (read: status $rc, '$got')"
        return 1
    fi
}

# ---- assertions ---------------------------------------------------------------

# assert_usage_error PROGRAM ARGS...: the program exits 2 with nothing on
# stdout, a one-line reason and then the usage line on stderr.
# shellcheck disable=SC2154 # status, stderr, stderr_lines: set by Bats run
assert_usage_error() {
    local prog=$1
    shift
    # A bound on the run: a build that wrongly accepts the options would
    # start serving instead of exiting.
    run --separate-stderr timeout "$WAIT_LIMIT" "$BIN/$prog" "$@"
    [[ $status -eq 2 ]] || { echo "exit $status, want 2: $prog $*"; return 1; }
    [[ -z $output ]] || { echo "stdout not empty: $output"; return 1; }
    [[ ${#stderr_lines[@]} -eq 2 ]] ||
        { echo "want 2 lines on stderr, got: $stderr"; return 1; }
    [[ ${stderr_lines[0]} == "$prog: "* ]] ||
        { echo "reason does not start with '$prog: ': $stderr"; return 1; }
    [[ ${stderr_lines[1]} == "usage: $prog "* ]] ||
        { echo "second line is not the usage line: $stderr"; return 1; }
}

# assert_help PROGRAM: -h prints the usage to stdout and exits 0.
assert_help() {
    run --separate-stderr "$BIN/$1" -h
    [[ $status -eq 0 ]] || { echo "exit $status"; return 1; }
    [[ $output == *"usage: $1 "* ]] || { echo "no usage line: $output"; return 1; }
    [[ -z $stderr ]] || { echo "stderr not empty: $stderr"; return 1; }
}

# assert_signal_exit PROGRAM SIGNAL [ARGS...]: started on port 0, the
# program ends with status 0 on SIGNAL.
assert_signal_exit() {
    local prog=$1 sig=$2
    shift 2
    start_server "$prog" "$@"
    stop_process "$SERVER_PID" "$sig"
    [[ $STOP_STATUS == 0 ]] || { echo "exit status: $STOP_STATUS"; return 1; }
}

# ---- checks every server stage shares (stages 2 to 6) --------------------------

# readiness_verb PROGRAM: what its readiness line starts with.
readiness_verb() {
    if [[ $1 == stage2_bind ]]; then echo "bound to"; else echo "listening on"; fi
}

# assert_bad_ports PROGRAM: every port that is not a whole number in
# 0..65535 is a usage error.
assert_bad_ports() {
    local p
    for p in 65536 70000 -1 +80 abc 80x "" " 80" 99999999999999999999999; do
        assert_usage_error "$1" -p "$p" || { echo "port '$p'"; return 1; }
        [[ ${stderr_lines[0]} == "$1: -p $p: a port is a whole number from 0 to 65535" ]] ||
            { echo "reason: ${stderr_lines[0]}"; return 1; }
    done
    assert_usage_error "$1" -p
}

# assert_bad_addresses PROGRAM: names and malformed literals are usage errors.
assert_bad_addresses() {
    local a
    for a in localhost 256.0.0.1 1.2.3 ::g "" "[::1]" 127.0.0.1:80; do
        assert_usage_error "$1" -a "$a" || { echo "address '$a'"; return 1; }
        [[ ${stderr_lines[0]} == "$1: -a $a: not an IPv4 or IPv6 address literal"* ]] ||
            { echo "reason: ${stderr_lines[0]}"; return 1; }
    done
}

# assert_port_zero PROGRAM: -p 0 gets a port the kernel chose, and the
# readiness line shows it, as getsockname() reports it.
assert_port_zero() {
    local verb
    verb=$(readiness_verb "$1")
    start_server "$1" -q
    [[ $SERVER_ADDR == 127.0.0.1 ]] || { echo "address $SERVER_ADDR"; return 1; }
    ((PORT > 0 && PORT <= 65535)) || { echo "port $PORT"; return 1; }
    # -q: the readiness line is all of stdout.
    [[ $(cat "$SERVER_OUT") == "$verb 127.0.0.1:$PORT" ]] ||
        { echo "stdout: $(cat "$SERVER_OUT")"; return 1; }
}

# assert_ipv6 PROGRAM: binding ::1 works, and the readiness line writes the
# address in brackets.
assert_ipv6() {
    start_server "$1" -q -a ::1
    [[ $SERVER_ADDR == ::1 ]] || { echo "address $SERVER_ADDR"; return 1; }
    grep -qx "$(readiness_verb "$1") \[::1\]:$PORT" "$SERVER_OUT"
}

# assert_addr_in_use PROGRAM [ARGS...]: a second copy, with ARGS, on the port
# of a running first copy fails with status 1 and the errno's name and text on
# stderr (CURRICULUM F10); the first copy goes on.
assert_addr_in_use() {
    local prog=$1
    shift
    start_server "$prog" -q
    run --separate-stderr timeout "$WAIT_LIMIT" "$BIN/$prog" -q -p "$PORT" "$@"
    [[ $status -eq 1 ]] || { echo "exit $status, want 1"; return 1; }
    [[ $stderr == "$prog: bind 127.0.0.1:$PORT: EADDRINUSE (Address already in use)" ]] ||
        { echo "stderr: $stderr"; return 1; }
    is_running "$SERVER_PID" || { echo "the first copy died"; return 1; }
}

# assert_emfile_goes_on PROGRAM MESSAGE: limited to 4 descriptors (0 to 2
# and the listener, none left for a client), the program reports MESSAGE on
# stderr when a client connects, and keeps running.
assert_emfile_goes_on() {
    start_server_limited 4:4 "$1"
    nc_connects 127.0.0.1 "$PORT" 2
    wait_until "$WAIT_LIMIT" grep -q "$2" "$SERVER_ERR" ||
        { echo "no '$2' on stderr"; return 1; }
    is_running "$SERVER_PID" || { echo "the server died"; return 1; }
}

# assert_setup_fails PROGRAM "RULE..." [ARGS...]: run with ARGS and each
# RULE in turn, the program exits 1 and names the failed call on stderr. A
# RULE is a call made to fail by the preload library build/tools/libfail.so
# (tests/fault/fail.c), with EIO: "listen" (its first call), or "sigaction@3"
# (its third). These are errors no real setup provokes: socket(), listen()
# and the like do not fail on a healthy host.
assert_setup_fails() {
    local prog=$1 rules=$2 rule
    shift 2
    for rule in $rules; do
        # Only the Nth call fails: the coverage build's own calls at exit
        # (open, fcntl) must still work.
        [[ $rule == *@* ]] || rule+=@1
        run_with_faults "$rule" "$prog" "$@"
        [[ $status -eq 1 ]] || { echo "$rule: exit $status, want 1: $stderr"; return 1; }
        [[ $stderr == "$prog: ${rule%%[:@]*}"*": EIO (Input/output error)" ]] ||
            { echo "$rule: stderr: $stderr"; return 1; }
    done
}

# assert_reuseaddr PROGRAM: with a connection of the port in TIME_WAIT and
# nobody listening, bind() fails without SO_REUSEADDR (-R) and works with it
# (CURRICULUM F11).
assert_reuseaddr() {
    local port
    port=$("$TOOLS/timewait") || return 1
    [[ $(count_sockets time-wait "sport = :$port") -ge 1 ]] ||
        { echo "no TIME_WAIT on port $port"; return 1; }
    run --separate-stderr timeout "$WAIT_LIMIT" "$BIN/$1" -q -R -p "$port"
    [[ $status -eq 1 ]] || { echo "-R: exit $status, want 1"; return 1; }
    [[ $stderr == *"EADDRINUSE (Address already in use)" ]] ||
        { echo "-R: stderr: $stderr"; return 1; }
    start_server "$1" -q -p "$port"
    [[ $PORT == "$port" ]]
}

# ---- checks every echo server shares (stages 4 to 6) ---------------------------

# echo_once TEXT: sends TEXT to the server on PORT (nc_send: then shuts
# down its sending side) and prints what comes back.
echo_once() {
    printf '%s' "$1" | nc_send 127.0.0.1 "$PORT"
}

# assert_nothing_back TEXT: sent TEXT (echo_once), the client gets nothing
# back, and the connection ends within WAIT_LIMIT s: the server closed it,
# with a FIN, or with a reset when TEXT was left unread (after which ncat
# exits 1 and the others 0, so nc's status is not judged).
assert_nothing_back() {
    local got rc=0
    got=$(echo_once "$1") || rc=$?
    ((rc != 124)) || { echo "the connection did not end within $WAIT_LIMIT s"; return 1; }
    [[ -z $got ]] || { echo "got back: '$got'"; return 1; }
}

# assert_echoes_text: a line of text comes back as it was sent.
assert_echoes_text() {
    local got rc=0
    got=$(echo_once $'hello, echo\n') || rc=$?
    [[ $got == "hello, echo" ]] || { echo "got: '$got' (nc_send: status $rc)"; return 1; }
}

# assert_echoes_file SIZE: SIZE bytes of random binary data (NUL bytes and
# all) come back byte for byte, checked by checksum; nc writes and reads at
# the same time, then half-closes (nc_send) and reads the rest.
assert_echoes_file() {
    local in=$BATS_TEST_TMPDIR/echo.in out=$BATS_TEST_TMPDIR/echo.out rc=0
    head -c "$1" /dev/urandom >"$in"
    nc_send -t 60 127.0.0.1 "$PORT" <"$in" >"$out" || rc=$?
    ((rc != 124)) || { echo "nc_send timed out"; return 1; }
    [[ $(wc -c <"$out") -eq $1 ]] || { echo "got $(wc -c <"$out") bytes"; return 1; }
    [[ $(cksum <"$in") == "$(cksum <"$out")" ]] || { echo "checksums differ"; return 1; }
}

# open_held_client NAME: nc_hold NAME on fd 6: what is written to fd 6 goes
# to the server, and closing fd 6 ends nc's input (nc then shuts down its
# sending side). Its output goes to $BATS_TEST_TMPDIR/NAME.out; HELD_PID is
# its PID.
open_held_client() {
    nc_hold "$1" 6
}

# file_is FILE TEXT: FILE holds exactly TEXT (plus a final newline).
file_is() {
    [[ $(cat "$1" 2>/dev/null) == "$2" ]]
}

# assert_max_one_client PROGRAM: started with -m 1, the program turns a
# second client away at once (it sees end of stream, never hangs) and keeps
# serving the first.
assert_max_one_client() {
    start_server "$1" -m 1
    open_held_client first
    printf 'first\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/first.out" first || return 1
    closed_at_once || { echo "second client"; return 1; }
    grep -q "turned away: the -m limit of 1 is reached; closing" "$SERVER_OUT" ||
        { echo "no narration"; return 1; }
    printf 'still\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/first.out" $'first\nstill' || return 1
    exec 6>&-
}

# assert_write_and_close_fail PROGRAM: with write() and close() failing
# (EIO, by the preload library) on the first client, only that client ends:
# it gets nothing back, both errors are reported, and the next client is
# echoed.
assert_write_and_close_fail() {
    start_faulty_server write:EIO@1,close:EIO@1 "$1"
    assert_nothing_back $'lost\n'
    grep -qE "^$1: write to 127\.0\.0\.1:[0-9]+ on fd 4: EIO" "$SERVER_ERR"
    assert_warned "$1: close fd 4: EIO (Input/output error)"
    grep -q "on fd 4 ended by an error: 0 bytes echoed" "$SERVER_OUT"
    assert_echoes_text
}

# assert_turned_away_close_fails PROGRAM FD: started with -m 1 and its
# first close() failing (EIO, by the preload library), the program still
# closes the client it turns away (on FD), says that close failed, and keeps
# serving the first client.
assert_turned_away_close_fails() {
    start_faulty_server close@1 "$1" -q -m 1
    open_held_client first
    printf 'first\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/first.out" first || return 1
    closed_at_once || { echo "second client"; return 1; }
    assert_warned "$1: close fd $2: EIO (Input/output error)" || return 1
    printf 'still\n' >&6
    wait_until "$WAIT_LIMIT" file_is "$BATS_TEST_TMPDIR/first.out" $'first\nstill' || return 1
    exec 6>&-
}

# assert_survives_reset [BYTES [close]]: a client that sends BYTES and
# resets (SO_LINGER 0), or with "close" hangs up without reading its echo,
# ends only its own connection: the server keeps running and echoes the next
# client.
assert_survives_reset() {
    "$TOOLS/reset" 127.0.0.1 "$PORT" "${1:-0}" ${2:+"$2"} ||
        { echo "reset tool failed"; return 1; }
    assert_echoes_text || return 1
    is_running "$SERVER_PID" || { echo "the server died"; return 1; }
}

# assert_survives_hangups: the server outlives clients that vanish in each
# way a peer can: a reset before anything is echoed, a reset with data in
# flight, and hanging up on 48 KiB (the server echoes the first part, the
# client's kernel answers with RST, and the next echo write fails with EPIPE,
# raising SIGPIPE; five times, as that needs the RST to win a race).
assert_survives_hangups() {
    assert_survives_reset 0 || return 1
    assert_survives_reset 100000 || return 1
    for _ in 1 2 3 4 5; do
        assert_survives_reset 49152 close || return 1
    done
}

# server_recvq_total: the bytes waiting, unread, in the server's connected
# sockets on PORT (what clients sent that the program has not read).
server_recvq_total() {
    ss -Htn state established "sport = :$PORT" | awk '{ n += $1 } END { print n + 0 }'
}

# cpu_ticks PID: user + system CPU time the process has used, in clock ticks
# (fields 14 and 15 of /proc/PID/stat, counted after the command name).
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}

# cpu_percent PID: the share of one CPU the process used over about a second,
# from /proc/PID/stat before and after, as a whole percentage.
cpu_percent() {
    local hz t0 t1 s0 s1
    hz=$(getconf CLK_TCK)
    t0=$(cpu_ticks "$1")
    s0=$(date +%s%N)
    sleep 1
    t1=$(cpu_ticks "$1")
    s1=$(date +%s%N)
    echo $(((t1 - t0) * 100 * 1000000000 / hz / (s1 - s0)))
}

# ---- many clients, limits and memory (stage 6; tests/tools/load) ---------------

# now_ms: the time of day in milliseconds (date), to time "within a second".
now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# rss_kb PID: the resident memory of the process, in KiB (VmRSS).
rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# fd_count PID: how many descriptors the process has open.
fd_count() {
    local fds=("/proc/$1/fd/"*)
    echo "${#fds[@]}"
}

# fd_count_is PID N: for wait_until.
fd_count_is() {
    [[ $(fd_count "$1") == "$2" ]]
}

# start_server_limited SOFT:HARD PROGRAM [ARGS...]: start_server, with the
# program started under that descriptor limit (RLIMIT_NOFILE) by prlimit,
# which sets it and then execs the program (same PID).
start_server_limited() {
    local limit=$1 prog=$2 dir=$BATS_TEST_TMPDIR/limited
    shift 2
    [[ -z ${QEMU:-} ]] ||
        skip "under qemu-user: the emulator needs descriptors of its own under the limit"
    mkdir -p "$dir"
    printf '#!/bin/sh\nexec prlimit --nofile=%s "%s" "$@"\n' \
        "$limit" "$BIN/$prog" >"$dir/$prog"
    chmod +x "$dir/$prog"
    BIN=$dir start_server "$prog" "$@"
}

# skip_under_valgrind REASON: `make valgrind` runs the servers under memcheck
# and sets VALGRIND=1; a test whose check depends on something valgrind
# changes (descriptor numbers, the descriptor limit) skips, saying why.
skip_under_valgrind() {
    [[ -z ${VALGRIND:-} ]] || skip "under valgrind: $1"
}

# skip_under_qemu: skips a test that needs the fault library (make arm64
# runs the suites with QEMU=1 against binaries for another architecture,
# which a preload library built for this machine cannot reach).
skip_under_qemu() {
    [[ -z ${QEMU:-} ]] ||
        skip "under qemu-user: the fault library is built for this machine, not for the emulated program"
}

# hard_nofile_at_least N: the hard descriptor limit allows N (for a skip).
hard_nofile_at_least() {
    local hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] || ((hard >= $1))
}

# run_load MODE [OPTIONS...]: runs tests/tools/load OPTIONS 127.0.0.1 PORT
# MODE in the foreground, as Bats `run` (status, output, stderr).
run_load() {
    local mode=$1
    shift
    run --separate-stderr timeout 120 "$TOOLS/load" "$@" 127.0.0.1 "$PORT" "$mode"
}

# start_load NAME MODE [OPTIONS...]: starts the load tool in the background
# with -w: it stops after its first phase and waits for release_load. Its
# stdout goes to $BATS_TEST_TMPDIR/NAME.out (LOAD_OUT), stderr to NAME.err;
# LOAD_PID is its PID. Its stdin is a FIFO held open on fd 7.
start_load() {
    local name=$1 mode=$2 fifo=$BATS_TEST_TMPDIR/$1.load.fifo
    shift 2
    LOAD_OUT=$BATS_TEST_TMPDIR/$name.out
    mkfifo "$fifo"
    exec 7<>"$fifo"
    spawn "$TOOLS/load" -w "$@" 127.0.0.1 "$PORT" "$mode" \
        <"$fifo" >"$LOAD_OUT" 2>"$BATS_TEST_TMPDIR/$name.err"
    LOAD_PID=$SPAWNED_PID
}

# wait_load_line PATTERN [SECONDS]: waits for the load tool to print a line
# matching PATTERN (grep -E), and sets LOAD_LINE to it.
wait_load_line() {
    wait_until "${2:-$WAIT_LIMIT}" grep -qE "$1" "$LOAD_OUT" ||
        { echo "load printed no '$1': $(cat "$LOAD_OUT")"; return 1; }
    # shellcheck disable=SC2034 # LOAD_LINE is read by the suites
    LOAD_LINE=$(grep -m 1 -E "$1" "$LOAD_OUT")
}

# release_load: lets the load tool go on to its second phase.
release_load() {
    printf 'go\n' >&7
    exec 7>&-
}

# finish_load [SECONDS]: waits for the load tool to end; LOAD_STATUS is its
# exit status.
finish_load() {
    wait_until "${1:-60}" has_exited "$LOAD_PID" ||
        { echo "the load tool did not finish"; return 1; }
    LOAD_STATUS=0
    # shellcheck disable=SC2034 # LOAD_STATUS is read by the suites
    wait "$LOAD_PID" || LOAD_STATUS=$?
}

# ---- fault injection (tests/fault/fail.c: build/tools/libfail.so) --------------
#
# FAIL_CALL rules, each CALL[:ERRNO][@N[+]]: the call fails with ERRNO (EIO
# if not given); @N: only its Nth call (counted from 1), @N+: that one and
# every later one; without @N, every call. Several rules: comma-separated.

# need_own_allocator PROGRAM: a sanitizer build, or valgrind, brings an
# allocator of its own, which stands in for malloc() and calloc() ahead of
# the preload library: skip a test that makes them fail, saying so.
need_own_allocator() {
    skip_under_valgrind "valgrind's allocator stands in for malloc() and calloc() ahead of the preload library"
    if grep -qa __asan_init "$BIN/$1"; then
        skip "a sanitizer build's allocator stands in for malloc() and calloc() ahead of the preload library"
    fi
}

# fault_env RULES PROGRAM: the environment that preloads the library with
# RULES for PROGRAM alone (env's arguments): a wrapper script's shell, or
# valgrind on its way to the program, inherits the preload but not the
# rules. A sanitizer build wants its runtime first in the list of
# libraries; it works second, once told not to check.
fault_env() {
    echo "LD_PRELOAD=$TOOLS/libfail.so" "FAIL_CALL=$1" "FAIL_PROGRAM=$2" \
        "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
}

# run_with_faults RULES PROGRAM [ARGS...]: runs $BIN/PROGRAM ARGS with the
# calls in RULES failing, as Bats `run --separate-stderr` (bounded).
run_with_faults() {
    local rules=$1 prog=$2 vars
    shift 2
    skip_under_qemu
    read -r -a vars <<<"$(fault_env "$rules" "$prog")"
    # env sets the preload for the program only, not for timeout.
    run --separate-stderr timeout "$WAIT_LIMIT" env "${vars[@]}" "$BIN/$prog" "$@"
}

# start_faulty_server RULES PROGRAM [ARGS...]: start_server, with the calls
# in RULES failing. With NOFILE=SOFT:HARD set, also under that descriptor
# limit (prlimit, as start_server_limited).
start_faulty_server() {
    local rules=$1 prog=$2 dir=$BATS_TEST_TMPDIR/faulty limit=""
    shift 2
    skip_under_qemu
    [[ -z ${NOFILE:-} ]] || limit="prlimit --nofile=$NOFILE"
    mkdir -p "$dir"
    printf '#!/bin/sh\nexec env %s %s "%s" "$@"\n' \
        "$(fault_env "$rules" "$prog")" "$limit" "$BIN/$prog" >"$dir/$prog"
    chmod +x "$dir/$prog"
    BIN=$dir start_server "$prog" "$@"
}

# stderr_has TEXT: the server's stderr holds a line with TEXT (for
# wait_until).
stderr_has() {
    grep -qF -- "$1" "$SERVER_ERR"
}

# assert_warned TEXT: within WAIT_LIMIT seconds the server's stderr says
# TEXT, and the server is still running.
assert_warned() {
    wait_until "$WAIT_LIMIT" stderr_has "$1" ||
        { echo "no '$1' on stderr: $(cat "$SERVER_ERR")"; return 1; }
    is_running "$SERVER_PID" || { echo "the server died: $(cat "$SERVER_ERR")"; return 1; }
}

# assert_exits_with STATUS TEXT: within WAIT_LIMIT seconds the server ends
# with STATUS, and its stderr is exactly TEXT.
assert_exits_with() {
    wait_until "$WAIT_LIMIT" has_exited "$SERVER_PID" ||
        { echo "still running; stderr: $(cat "$SERVER_ERR")"; return 1; }
    local rc=0
    wait "$SERVER_PID" || rc=$?
    [[ $rc -eq $1 ]] || { echo "exit $rc, want $1: $(cat "$SERVER_ERR")"; return 1; }
    [[ $(cat "$SERVER_ERR") == "$2" ]] || { echo "stderr: $(cat "$SERVER_ERR")"; return 1; }
}

# ---- the system calls a server makes (strace) ----------------------------------

# start_traced_server CALLS PROGRAM [ARGS...]: start_server, with the program
# run under strace -f, which writes the calls in CALLS (strace's -e trace=
# list, e.g. setsockopt) to TRACE_OUT. strace starts the program as its
# child, which works where attaching to a running process is refused
# (kernel.yama.ptrace_scope). SERVER_PID is the program's own PID, TRACER_PID
# strace's; both are stopped in teardown. Skips the test where there is no
# strace or it cannot trace at all (a container that forbids ptrace).
start_traced_server() {
    local calls=$1 prog=$2 dir=$BATS_TEST_TMPDIR/traced
    shift 2
    command -v strace >/dev/null 2>&1 || skip "no strace here"
    strace -f -qq -o /dev/null -e trace=none true 2>/dev/null ||
        skip "strace cannot trace here"
    TRACE_OUT=$(mktemp "$BATS_TEST_TMPDIR/$prog.trace.XXXXXX")
    mkdir -p "$dir"
    # LeakSanitizer cannot run under ptrace: a sanitizer build would fail at
    # exit for that alone (its other checks stay on).
    printf '#!/bin/sh\nASAN_OPTIONS=%s exec strace -f -qq -o "%s" -e trace=%s "%s" "$@"\n' \
        "${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$TRACE_OUT" "$calls" \
        "$BIN/$prog" >"$dir/$prog"
    chmod +x "$dir/$prog"
    BIN=$dir start_server "$prog" "$@" || return 1
    TRACER_PID=$SERVER_PID
    SERVER_PID=$(pgrep -P "$TRACER_PID") ||
        { echo "no program under strace $TRACER_PID"; return 1; }
    STARTED_PIDS+=("$SERVER_PID")
}

# stop_traced_server: stops the program of start_traced_server with SIGTERM
# and waits for strace to end, so that TRACE_OUT holds every call; fails
# unless the program's status (which strace passes on as its own) is 0.
stop_traced_server() {
    local rc=0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait_until "$WAIT_LIMIT" has_exited "$TRACER_PID" ||
        { echo "strace and its program did not end"; return 1; }
    wait "$TRACER_PID" || rc=$?
    [[ $rc == 0 ]] || { echo "exit status: $rc"; return 1; }
}

# assert_nodelay PROGRAM: TCP_NODELAY is set on every client by default (two
# in turn, each on fd 4), and not at all with -N (F46), as strace sees the
# program's setsockopt calls.
assert_nodelay() {
    start_traced_server setsockopt "$1" -q
    assert_echoes_text || return 1
    assert_echoes_text || return 1
    stop_traced_server || return 1
    [[ $(grep -cE '^[0-9]+ +setsockopt\(4, SOL_TCP, TCP_NODELAY, \[1\], 4\) = 0$' "$TRACE_OUT") == 2 ]] ||
        { echo "want TCP_NODELAY on fd 4 twice: $(cat "$TRACE_OUT")"; return 1; }
    start_traced_server setsockopt "$1" -q -N
    assert_echoes_text || return 1
    assert_echoes_text || return 1
    stop_traced_server || return 1
    # The trace saw the listener's call; it has none for TCP_NODELAY.
    grep -q 'setsockopt(3, SOL_SOCKET, SO_REUSEADDR, \[1\], 4) = 0' "$TRACE_OUT" ||
        { echo "no SO_REUSEADDR in the trace: $(cat "$TRACE_OUT")"; return 1; }
    if grep -q TCP_NODELAY "$TRACE_OUT"; then
        echo "-N, and still TCP_NODELAY: $(cat "$TRACE_OUT")"
        return 1
    fi
}

# assert_nodelay_fails PROGRAM: setsockopt call 2 (call 1 is the listener's
# SO_REUSEADDR) is the first client's TCP_NODELAY; made to fail (EIO), it is
# reported and the client is still echoed.
assert_nodelay_fails() {
    local fd=${2:-4}
    start_faulty_server setsockopt@2 "$1" -q
    assert_echoes_text || return 1
    assert_warned "$1: TCP_NODELAY on fd $fd (going on without): EIO (Input/output error)" || return 1
    stop_all
    # Call 3 is its SO_OOBINLINE: the client is served all the same.
    start_faulty_server setsockopt@3 "$1" -q
    assert_echoes_text || return 1
    assert_warned "$1: SO_OOBINLINE on fd $fd (going on without): EIO (Input/output error)"
}

# assert_urgent_echoed PROGRAM: a byte sent as urgent data (MSG_OOB) between
# two ordinary ones comes back in its place (SO_OOBINLINE, F45).
assert_urgent_echoed() {
    command -v python3 >/dev/null 2>&1 || skip "no python3 here"
    start_server "$1" -q
    run python3 "$ROOT/tests/tools/urgent.py" "$PORT"
    echo "$1: $output"
    [[ $status -eq 0 && $output == "abcXdef" ]]
}

# listening_port PID: the port PID listens on, from ss (fails if none yet).
listening_port() {
    local line
    line=$(ss -Hltnp 2>/dev/null | grep "pid=$1," | head -n 1)
    [[ -n $line ]] || return 1
    line=$(awk '{ print $4 }' <<<"$line")
    echo "${line##*:}"
}

# assert_closed_stdio PROGRAM [ECHOES]: started with stdout closed, then
# with stderr closed, the program opens /dev/null there, so no socket lands
# on 1 or 2; it is not killed by a signal, it echoes (when ECHOES is given),
# and SIGTERM ends it with status 0. The readiness line cannot be read with
# stdout closed: the port is the one ss shows it listening on.
assert_closed_stdio() {
    local prog=$1 echoes=${2:-} which
    for which in 1 2; do
        if ((which == 1)); then
            spawn "$BIN/$prog" -p 0 </dev/null >&- 2>"$BATS_TEST_TMPDIR/err"
        else
            spawn "$BIN/$prog" -p 0 </dev/null >"$BATS_TEST_TMPDIR/out" 2>&-
        fi
        SERVER_PID=$SPAWNED_PID
        if [[ $prog == stage2_bind ]]; then
            # Bound, not listening: ss -l does not show it; /proc does.
            wait_until "$WAIT_LIMIT" fd_is_socket "$SERVER_PID" 3 || return 1
        else
            wait_until "$WAIT_LIMIT" listening_port "$SERVER_PID" || return 1
            PORT=$(listening_port "$SERVER_PID")
        fi
        [[ $(readlink "/proc/$SERVER_PID/fd/$which") == /dev/null ]] ||
            { echo "fd $which: $(readlink "/proc/$SERVER_PID/fd/$which")"; return 1; }
        if [[ -n $echoes ]]; then
            assert_echoes_text || return 1
        fi
        stop_process "$SERVER_PID" TERM
        [[ $STOP_STATUS == 0 ]] || { echo "$prog, fd $which closed: exit $STOP_STATUS"; return 1; }
    done
}

# fd_is_socket PID FD: descriptor FD of PID is a socket (for wait_until).
fd_is_socket() {
    [[ $(readlink "/proc/$1/fd/$2") == socket:* ]]
}
