# Builds every stage into bin/ and runs the Bats suites. `make help` lists the
# targets. CC, CFLAGS and LDFLAGS may be set on the command line
# (make CC=clang); the standard and the warnings in common/flags.mk always
# apply.
include common/flags.mk

# The lesson order. A stage is built once its folder exists.
STAGES := stage1_socket stage2_bind stage3_listen stage4_accept \
          stage5_nonblock stage6_poll
PRESENT := $(foreach s,$(STAGES),$(if $(wildcard $(s)/$(s).c),$(s)))

# Where objects and programs go; `make check` points both elsewhere so the
# sanitizer build never mixes with the normal one.
BUILD ?= build
BIN ?= bin

PROGRAMS := $(addprefix $(BIN)/,$(PRESENT))
# Stage 6 is three programs over one body (stage6_poll/server.c): the lesson
# stage6_poll, and stage6_select and stage6_epoll, the same server waiting
# with select() and epoll. epoll is Linux's: stage6_epoll is built where the
# compiler finds <sys/epoll.h>, and `make` says when it is not.
HAVE_EPOLL := $(shell printf '\043include <sys/epoll.h>\n' | \
                $(CC) -E - >/dev/null 2>&1 && echo yes)
STAGE6_TWINS := stage6_select $(if $(HAVE_EPOLL),stage6_epoll)
PROGRAMS += $(if $(filter stage6_poll,$(PRESENT)),\
              $(addprefix $(BIN)/,$(STAGE6_TWINS)))
TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(wildcard tests/tools/*.c))

SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all \
             -fno-omit-frame-pointer

.PHONY: all run test check tools help clean diff lint valgrind coverage doctor
.PHONY: arm64
.PHONY: bench bench-quick lab
all: $(PROGRAMS)
ifeq ($(HAVE_EPOLL),)
	@echo "make: stage6_epoll not built: $(CC) finds no <sys/epoll.h> here" \
	      "(epoll is Linux's; stage6_poll and stage6_select are the same server)"
endif

# -MMD -MP write a .d file beside each object listing the headers it read,
# so a change to common/common.h rebuilds every stage that includes it.
$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Icommon -MMD -MP -c -o $@ $<

# Each program: its stage's object plus the common helper; stage 6's also
# link the body they share.
define stage_rule
$(BIN)/$(1): $(BUILD)/$(2)/$(1).o $(if $(filter stage6_poll,$(2)),\
             $(BUILD)/stage6_poll/server.o) $(BUILD)/common/common.o
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_CFLAGS) $$(LDFLAGS) -o $$@ $$^
endef
$(foreach s,$(PRESENT),$(eval $(call stage_rule,$(s),$(s))))
$(foreach s,$(STAGE6_TWINS),$(eval $(call stage_rule,$(s),stage6_poll)))

# Test helpers: small C programs for what nc cannot do. Built with the same
# flags, never with sanitizers (they are not what is under test).
$(BUILD)/tools/%: tests/tools/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP $(LDFLAGS) -o $@ $<

# The fault-injection preload library (tests/fault/fail.c): GNU C, since it
# interposes glibc's own declarations; never linked into a stage.
FAULT_LIB := $(BUILD)/tools/libfail.so
$(FAULT_LIB): tests/fault/fail.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 $(filter-out -Wpedantic,$(WARN_FLAGS)) $(CFLAGS) \
	    -fPIC -shared -o $@ $< -ldl

# The poll() stand-in (tests/fault/bsdpoll.c): poll() reports a half-closed
# TCP connection as macOS does, for tests/stage6_hup.bats. GNU C, as above.
BSDPOLL_LIB := $(BUILD)/tools/libbsdpoll.so
$(BSDPOLL_LIB): tests/fault/bsdpoll.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 $(filter-out -Wpedantic,$(WARN_FLAGS)) $(CFLAGS) \
	    -fPIC -shared -o $@ $< -ldl

tools: $(TOOLS) $(FAULT_LIB) $(BSDPOLL_LIB)

# ---- make bench: the load generator, the epoll baseline, the numbers -------
# tests/bench/: bench (the load generator), epoll_echo (the baseline: an
# independent hand-written epoll server, not a stage), pollcost (what one
# poll() call costs over 10 to 10,000 descriptors, and one epoll_wait()),
# and two faulty builds of epoll_echo that tests/bench.bats runs to see the
# integrity check fail: broken_flip flips byte 1000 of every echo stream,
# broken_cut echoes nothing after it. Built with `make tools` too, since
# tests/bench.bats runs with the other suites.
# `make bench BENCH_OUT=docs/bench` writes the committed copy of the results.
BENCH_DIR := $(BUILD)/bench
BENCH_OUT ?= $(BENCH_DIR)
# Rounds of make bench: round 1 of every server, then round 2, ...; the
# table gives the median of each figure and its spread.
BENCH_ROUNDS ?= 3
BENCH_PROGS := $(addprefix $(BENCH_DIR)/,bench epoll_echo broken_flip \
                   broken_cut pollcost)
$(BENCH_DIR)/bench $(BENCH_DIR)/pollcost: $(BENCH_DIR)/%: tests/bench/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP $(LDFLAGS) -o $@ $<
$(BENCH_DIR)/epoll_echo $(BENCH_DIR)/broken_flip $(BENCH_DIR)/broken_cut: \
        tests/bench/epoll_echo.c $(BUILD)/common/common.o
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(BENCH_FAULT_$(@F)) -Icommon -MMD -MP $(LDFLAGS) \
	    -o $@ $^
BENCH_FAULT_broken_flip := -DFLIP_AT=1000
BENCH_FAULT_broken_cut := -DCUT_AT=1000
tools: $(BENCH_PROGS)

# bench: BENCH_ROUNDS rounds of every server through every case, then the
# poll() cost curve (about 4 minutes with 3 rounds); the table is printed
# and written with the CSVs and the chart to BENCH_OUT.
bench: all $(BENCH_PROGS)
	tests/bench/run -r $(BENCH_ROUNDS) $(BIN) $(BENCH_DIR) $(BENCH_OUT)

# bench-quick: one round with small counts (under a minute): checks that
# every byte comes back from every server, never the timings (CI runs it).
bench-quick: all $(BENCH_PROGS)
	tests/bench/run -q $(BIN) $(BENCH_DIR) $(BENCH_DIR)/quick

# make run PORT=N starts it on another port (0: the kernel chooses). Only a
# PORT given on the command line counts: one in the environment is ignored,
# so a plain `make run` is always 6969.
ifneq ($(origin PORT),command line)
PORT := 6969
endif
run: all
	@case '$(PORT)' in \
	    ''|*[!0-9]*) echo "make run: PORT must be a number from 0 to 65535," \
	                      "e.g. make run PORT=0" >&2; exit 2 ;; \
	esac
	@if [ -x $(BIN)/stage6_poll ]; then \
	    exec $(BIN)/stage6_poll -a 127.0.0.1 -p $(PORT); \
	else \
	    echo "make run: stage 6 (the poll() echo server) is not built yet;"; \
	    echo "the stages that exist are: $(PRESENT)"; \
	    echo "try one of them, e.g.: $(BIN)/$(lastword $(PRESENT)) -p 6969"; \
	    exit 1; \
	fi

# make test asks tests/doctor first: without a compiler, make, Bats or nc
# nothing below can run, and one line saying what to install beats dozens of
# failures.
test:
	@tests/doctor --hard || { echo "make test: stopping: install what is" \
	    "MISSING above (make doctor checks everything)"; \
	    echo "0 passed, 1 failed"; exit 1; }
	@$(MAKE) --no-print-directory all tools
	tests/run

# doctor: what the course and the tests need on this machine, and for each
# missing or limited piece the line that fixes it.
doctor:
	@tests/doctor

check:
	$(MAKE) BUILD=build/sanitize BIN=build/sanitize/bin \
	    CFLAGS="-O1 -g $(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" all
	$(MAKE) tools
	STAGE_BIN=build/sanitize/bin tests/run

# ---- the checks a code reviewer would run -----------------------------------

# Every C file and every shell file in the repository.
C_FILES := $(wildcard stage*/*.c common/*.c tests/tools/*.c tests/*.c \
                     tests/fault/*.c tests/bench/*.c)
H_FILES := $(wildcard common/*.h stage6_poll/*.h tests/darwin/*.h)
BATS_FILES := $(wildcard tests/*.bats)
SH_FILES := tests/helpers.bash tests/run tests/coverage tests/memcheck .ci/run \
            tests/doctor tests/nc-flavour tests/course-length \
            tests/bench/run

# lint: cppcheck, clang-tidy (.clang-tidy says which checks and why), shellcheck,
# the .clang-format layout and a parse of clients/*.py; any finding fails. A
# finding kept on purpose is suppressed on its line, with the reason.
lint: SHELL := /bin/bash
lint:
	cppcheck -q --enable=warning,style,performance,portability \
	    --error-exitcode=1 --inline-suppr --std=c11 -D__linux__ \
	    -D_POSIX_C_SOURCE=200809L -Icommon \
	    --suppress=missingIncludeSystem $(C_FILES)
	@# One file per run: clang-tidy 14 given several files reports false
	@# "uninitialized va_list" findings in the later ones.
	@rc=0; for f in $(C_FILES); do \
	    echo "clang-tidy $$f"; \
	    clang-tidy --quiet "$$f" -- $(STD_FLAGS) -Icommon 2>&1 | \
	        grep -v ' warnings\? generated\.$$'; \
	    [ "$${PIPESTATUS[0]}" -eq 0 ] || rc=1; \
	done; exit $$rc
	shellcheck -s bash $(BATS_FILES) $(SH_FILES)
	clang-format --dry-run -Werror $(C_FILES) $(H_FILES)
	@# The course's Python clients: each must at least parse.
	python3 -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' clients/*.py
	@echo "lint: clean"

# valgrind: the stage 6 suite with each server under memcheck. build/valgrind/bin
# holds one wrapper per program that runs the normal build through
# tests/memcheck, so the suite runs unchanged (STAGE_BIN); each run writes its
# own log. A memory error or a definite leak makes the server exit 99 (the
# test fails), and the logs are checked again after the run. VALGRIND=1 tells
# the suite to skip the few tests that valgrind itself makes meaningless
# (each says why).
VG_DIR := build/valgrind
valgrind: all tools
	@rm -rf $(VG_DIR) && mkdir -p $(VG_DIR)/bin $(VG_DIR)/logs
	@for p in $(notdir $(PROGRAMS)); do \
	    printf '#!/bin/sh\nexec "%s" "%s" "%s" "$$@"\n' \
	        "$(CURDIR)/tests/memcheck" "$(CURDIR)/$(VG_DIR)/logs" \
	        "$(CURDIR)/$(BIN)/$$p" >$(VG_DIR)/bin/$$p; \
	    chmod +x $(VG_DIR)/bin/$$p; \
	done
	STAGE_BIN=$(VG_DIR)/bin VALGRIND=1 WAIT_LIMIT=30 tests/run tests/stage6.bats
	@logs=$$(ls $(VG_DIR)/logs/*.log 2>/dev/null | wc -l); \
	ended=$$(grep -l 'ERROR SUMMARY:' $(VG_DIR)/logs/*.log 2>/dev/null | wc -l); \
	bad=$$(grep -lE 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]|== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap)' \
	    $(VG_DIR)/logs/*.log); \
	if [ -n "$$bad" ]; then \
	    echo "valgrind: errors or definite leaks in:"; \
	    for f in $$bad; do echo "== $$f"; cat "$$f"; done; exit 1; \
	fi; \
	if [ "$$ended" -eq 0 ]; then echo "valgrind: no run reached its summary"; exit 1; fi; \
	echo "valgrind: $$logs server runs, no memory errors; $$ended ran to exit" \
	    "and had no definite leak (the others were killed by a test's" \
	    "teardown, so only their errors are checked)"

# coverage: the full suite against a --coverage build, then gcov's line and
# branch figures per file (tests/coverage); below COVERAGE_FLOOR (90) % of
# lines in any file fails.
COV_DIR := build/coverage
# The least share of lines every file must have covered, in percent.
COVERAGE_FLOOR ?= 90
coverage:
	rm -rf $(COV_DIR)
	@mkdir -p $(COV_DIR)
	$(CC) $(ALL_CFLAGS) -c -o $(COV_DIR)/gcov_exit.o tests/gcov_exit.c
	$(MAKE) BUILD=$(COV_DIR) BIN=$(COV_DIR)/bin \
	    CFLAGS="-O0 -g --coverage" \
	    LDFLAGS="--coverage -Wl,--wrap=_exit $(COV_DIR)/gcov_exit.o" all
	$(MAKE) tools
	@# A few tests run a server as an ordinary user (setpriv); it must be
	@# able to write the .gcda files too, or it says so on stderr.
	chmod -R a+w $(COV_DIR)
	umask 0 && COVERAGE=1 STAGE_BIN=$(COV_DIR)/bin tests/run
	tests/coverage $(COV_DIR) $(COVERAGE_FLOOR)

# ---- arm64: the cross build, and the suites under qemu-user -------------------
# arm64: builds every program for aarch64 (Debian: gcc-aarch64-linux-gnu),
# warnings as errors like every build, then runs the stage suites against
# those programs under qemu-aarch64 (Debian: qemu-user): build/arm64/qemu
# holds one wrapper per program. The tests that need the fault library skip
# there, since it is built for this machine (QEMU=1 tells them).
ARM64_CC ?= aarch64-linux-gnu-gcc
ARM64_SYSROOT ?= /usr/aarch64-linux-gnu
ARM64_DIR := build/arm64
ARM64_SUITES ?= tests/stage1.bats tests/stage2.bats tests/stage3.bats \
                tests/stage4.bats tests/stage5.bats tests/stage6.bats
arm64:
	$(MAKE) CC=$(ARM64_CC) BUILD=$(ARM64_DIR) BIN=$(ARM64_DIR)/bin all
	@$(MAKE) --no-print-directory tools
	@rm -rf $(ARM64_DIR)/qemu && mkdir -p $(ARM64_DIR)/qemu
	@for p in $$(ls $(ARM64_DIR)/bin); do \
	    printf '#!/bin/sh\nexec qemu-aarch64 -L "%s" "%s" "$$@"\n' \
	        "$(ARM64_SYSROOT)" "$(CURDIR)/$(ARM64_DIR)/bin/$$p" \
	        >$(ARM64_DIR)/qemu/$$p; \
	    chmod +x $(ARM64_DIR)/qemu/$$p; \
	done
	STAGE_BIN=$(ARM64_DIR)/qemu QEMU=1 WAIT_LIMIT=30 tests/run $(ARM64_SUITES)

# ---- make lab: the bug hunt (lab/README.md) ------------------------------------
# lab/NAME is one deliberately faulty build of stage 4, 5 or 6: bug.txt says
# what it breaks and which tests defend that rule, bug.patch is the bug.
# make lab: lab/run builds every variant under build/lab/NAME (a patched copy
# of the sources, never the sources themselves, built by this Makefile with
# the same flags as bin/), runs only the tests that defend its rule against
# it, and prints a table; it fails when a variant is caught by no test or its
# patch no longer applies. make lab BUG=NAME builds that one and says how to
# see its bug with a client, without running tests. LAB_JOBS=N: variants at
# once (default 2).
# libwindow.so (tests/fault/window.c) holds open the moment between the
# loop's last look and its wait, for the signal test of tests/lab_extra.bats:
# a test tool like the others, built by `make tools`.
WINDOW_LIB := $(BUILD)/tools/libwindow.so
$(WINDOW_LIB): tests/fault/window.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 $(filter-out -Wpedantic,$(WARN_FLAGS)) $(CFLAGS) \
	    -fPIC -shared -o $@ $< -ldl
tools: $(WINDOW_LIB)
SH_FILES += lab/run

lab: all tools
	@lab/run $(if $(BUG),-b '$(BUG)')

# What stage N adds to stage N-1, as a unified diff of the two programs.
diff:
	@n='$(STAGE)'; \
	case "$$n" in \
	    [2-6]) ;; \
	    *) echo "make diff: STAGE must be 2 to 6, e.g. make diff STAGE=3" \
	            "(what stage 3 adds to stage 2)" >&2; exit 2 ;; \
	esac; \
	prev=$$(echo $(STAGES) | cut -d ' ' -f $$((n - 1))); \
	cur=$$(echo $(STAGES) | cut -d ' ' -f $$n); \
	if [ ! -f "$$cur/$$cur.c" ]; then \
	    echo "make diff: $$cur is not in this checkout yet" >&2; exit 1; \
	fi; \
	diff -u "$$prev/$$prev.c" "$$cur/$$cur.c"; \
	[ $$? -le 1 ]

help:
	@echo "make         build every stage into $(BIN)/"
	@echo "make run     build and start the echo server (stage 6) on 127.0.0.1:6969"
	@echo "             (make run PORT=0: on a port the kernel chooses)"
	@echo "make test    build and run every Bats suite"
	@echo "make doctor  check what the course and the tests need here, and say how to fix it"
	@echo "make check   the same suites against an ASan + UBSan build"
	@echo "make diff STAGE=N   what stage N adds to stage N-1 (N = 2..6)"
	@echo "make lint    cppcheck, clang-tidy, shellcheck and the clang-format check"
	@echo "make valgrind   the stage 6 suite with the servers under valgrind memcheck"
	@echo "make coverage   the suites on a gcov build; line and branch table, 90% floor"
	@echo "make bench   measure stages 4 to 6 (poll, select, epoll) and the epoll baseline: table, CSV, chart"
	@echo "             (make bench BENCH_OUT=docs/bench writes the committed copy)"
	@echo "make bench-quick   the same, small and fast: checks every byte, not timings"
	@echo "make CC=musl-gcc BUILD=build/musl BIN=build/musl/bin   the musl build"
	@echo "make arm64   the aarch64 build, and the stage suites on it under qemu-user"
	@echo "make lab    the bug hunt: build each faulty variant in lab/ and check a test catches it (make lab BUG=NAME: build one, to try by hand)"
	@echo "make clean   remove what the build made"
	@echo "A stage also builds alone: cd stage2_bind && make"

clean:
	rm -rf build bin
	rm -f $(foreach s,$(STAGES),$(s)/$(s)) stage6_poll/stage6_select \
	    stage6_poll/stage6_epoll

-include $(wildcard $(BUILD)/*/*.d)
