# stage.mk - builds one stage inside its own folder, for a learner who works
# there:  cd stage2_bind && make && ./stage2_bind -p 0
# Each stage folder's Makefile names its program (PROG) and includes this.
include ../common/flags.mk

$(PROG): $(PROG).c ../common/common.c ../common/common.h
	$(CC) $(ALL_CFLAGS) -I../common $(LDFLAGS) -o $@ $(PROG).c ../common/common.c

.PHONY: clean
clean:
	rm -f $(PROG)
