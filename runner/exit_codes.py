"""The exit codes of nn-run, nn-rerun and nn-compare, named once."""

OK = 0
FAILED = 1  # training diverged, a sweep's job failed or was lost, or a rerun did not reproduce its source
BAD_INPUT = 2  # a value, store, server or source the command cannot use: one line on stderr, no new run
INTERRUPTED = 130  # Ctrl-C or SIGTERM: the run is KILLED with the points logged so far
