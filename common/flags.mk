# flags.mk - the compiler flags every build of this project uses, included by
# the top-level Makefile and by each stage folder's own Makefile.
#
# CC, CFLAGS and LDFLAGS are the user's to override (make CC=clang CFLAGS=-O0);
# the language standard and the warnings are not: they always apply, so a
# warning is an error whichever compiler or optimisation level is chosen.
CC ?= cc
CFLAGS ?= -O2 -g
STD_FLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L
# Darwin's headers hide what POSIX does not name (INADDR_LOOPBACK, the TCP
# keepalive knobs) once _POSIX_C_SOURCE is defined, unless _DARWIN_C_SOURCE
# is defined too. tests/darwin/emulate.h lists those names and checks the
# code against them on Linux.
UNAME_S ?= $(shell uname -s)
ifeq ($(UNAME_S),Darwin)
STD_FLAGS += -D_DARWIN_C_SOURCE
endif
WARN_FLAGS := -Wall -Wextra -Wpedantic -Wshadow -Wmissing-prototypes \
              -Wstrict-prototypes -Wformat=2 -Werror
ALL_CFLAGS = $(STD_FLAGS) $(WARN_FLAGS) $(CFLAGS)
