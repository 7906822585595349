"""An inter-process lock beside a SQLite store, held while one process creates its tables or an experiment.

MLflow creates and migrates a SQLite store's tables in every process that opens a new store, and
two processes doing it at once leave it half-migrated for good. Every nn-runner command takes
this lock (an flock on `<database>.lock`) around its first use of a store, so one process
creates the tables and the others wait, then find them made. The kernel releases an flock when
its process dies, so a crashed holder never blocks anyone. A tracking server's store is the
server's business: no lock. No MLflow here.

Only a process about to create the database makes the lock file. Where the database exists, the
lock is taken if its file is there (a process of ours may still be creating the tables) and
skipped if not (no process of ours made that store, and none is making it): looking a run up in
a store never leaves a file beside it.
"""

import fcntl
import os
import time
from contextlib import contextmanager

SQLITE_PREFIX = "sqlite:///"
LOCK_SUFFIX = ".lock"
WAIT_SECONDS = 300.0  # creating MLflow's tables takes ~3 s here; a loaded cluster node can take far longer
POLL_SECONDS = 0.05


class StoreError(RuntimeError):
    """A store nn-runner cannot use; the message is one line for the user."""


class StoreLockTimeout(StoreError):
    """Another process held the store's lock for longer than the wait allows."""


def sqlite_path(uri):
    """The database file of a sqlite:/// tracking URI (query parameters dropped); None for any other URI."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = uri[len(SQLITE_PREFIX):].split("?", 1)[0]
    return path or None


def lock_path(uri):
    """Where the lock of the store at `uri` lives (beside the database), or None when it needs none."""
    path = sqlite_path(uri)
    return None if path is None or path == ":memory:" else path + LOCK_SUFFIX


@contextmanager
def store_lock(uri, seconds=WAIT_SECONDS):
    """Hold the lock of the SQLite store at `uri` (nothing for other stores); wait at most `seconds` for it."""
    path = lock_path(uri)
    if path is None:
        yield
        return
    creating = not os.path.exists(sqlite_path(uri))
    try:
        handle = os.open(path, os.O_RDWR | (os.O_CREAT if creating else 0), 0o666)
    except OSError:  # a store made without one, no such folder, or not writable (MLflow's error will name it)
        yield
        return
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreLockTimeout(
                        f"tracking.uri={uri}: another process has held the store's lock ({path}) for over "
                        f"{seconds:.0f} s while creating its tables or an experiment; wait for it or stop it "
                        f"(`fuser {path}` names it)") from None
                time.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(handle)  # closing the descriptor releases the lock
