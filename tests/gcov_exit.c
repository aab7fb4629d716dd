/*
 * gcov_exit.c - linked into the `make coverage` build only, never into a
 * program a learner runs. Stages 1 to 5 end on SIGINT/SIGTERM with _exit()
 * from the signal handler (common.c: on_signal), which skips the exit
 * handlers that write the coverage data. The build links with
 * -Wl,--wrap=_exit, so each _exit call comes here first: write the data,
 * then end as before.
 */
/* NOLINTBEGIN(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp): the
 * names are fixed by libgcov and by ld's --wrap. */
void __gcov_dump(void);
void __real__exit(int status);
void __wrap__exit(int status);

void __wrap__exit(int status)
{
    __gcov_dump();
    __real__exit(status);
}
/* NOLINTEND(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
