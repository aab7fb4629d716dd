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
# stage6_select, the select() twin, is built from stage6_poll/ as well.
PROGRAMS += $(if $(wildcard stage6_poll/stage6_select.c),$(BIN)/stage6_select)
TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(wildcard tests/tools/*.c))

SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all \
             -fno-omit-frame-pointer

.PHONY: all run test check tools help clean diff
all: $(PROGRAMS)

# -MMD -MP write a .d file beside each object listing the headers it read,
# so a change to common/common.h rebuilds every stage that includes it.
$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Icommon -MMD -MP -c -o $@ $<

# Each program: its stage's object plus the common helper.
define stage_rule
$(BIN)/$(1): $(BUILD)/$(1)/$(1).o $(BUILD)/common/common.o
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_CFLAGS) $$(LDFLAGS) -o $$@ $$^
endef
$(foreach s,$(PRESENT),$(eval $(call stage_rule,$(s))))

ifneq ($(wildcard stage6_poll/stage6_select.c),)
$(BIN)/stage6_select: $(BUILD)/stage6_poll/stage6_select.o \
                      $(BUILD)/common/common.o
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^
endif

# Test helpers: small C programs for what nc cannot do. Built with the same
# flags, never with sanitizers (they are not what is under test).
$(BUILD)/tools/%: tests/tools/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP $(LDFLAGS) -o $@ $<

tools: $(TOOLS)

run: all
	@if [ -x $(BIN)/stage6_poll ]; then \
	    exec $(BIN)/stage6_poll -a 127.0.0.1 -p 6969; \
	else \
	    echo "make run: stage 6 (the poll() echo server) is not built yet;"; \
	    echo "the stages that exist are: $(PRESENT)"; \
	    echo "try one of them, e.g.: $(BIN)/$(lastword $(PRESENT)) -p 6969"; \
	    exit 1; \
	fi

test: all tools
	tests/run

check:
	$(MAKE) BUILD=build/sanitize BIN=build/sanitize/bin \
	    CFLAGS="-O1 -g $(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" all
	$(MAKE) tools
	STAGE_BIN=build/sanitize/bin tests/run

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
	@echo "make test    build and run every Bats suite"
	@echo "make check   the same suites against an ASan + UBSan build"
	@echo "make diff STAGE=N   what stage N adds to stage N-1 (N = 2..6)"
	@echo "make clean   remove what the build made"
	@echo "A stage also builds alone: cd stage2_bind && make"

clean:
	rm -rf build bin
	rm -f $(foreach s,$(STAGES),$(s)/$(s)) stage6_poll/stage6_select

-include $(wildcard $(BUILD)/*/*.d)
