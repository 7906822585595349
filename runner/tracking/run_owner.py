"""Which process owns a run, and whether that process still lives: for runs left RUNNING by a process that died.

MLflow never ends a run whose process was killed (SIGKILL, the OOM killer, a node lost). Every
run records its host, process id and the process's start time (so a reused pid is not mistaken
for the owner); on the same host, a run whose owner is gone can then be told from a live one.
No MLflow here: tags in, an answer out.
"""

import os
import socket

HOST_TAG = "host"  # socket.gethostname() of the process that ran the run
PID_TAG = "pid"
PROCESS_START_TAG = "process_start"  # the process's start time in clock ticks since boot (/proc/PID/stat), if known
OWNER_TAGS = (HOST_TAG, PID_TAG, PROCESS_START_TAG)


def process_start(pid):
    """The start time of process `pid` in clock ticks since boot, or None (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # the command name (field 2) may hold spaces and parentheses: count fields after its closing one
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_tags():
    """The tags that name this process as a run's owner."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    started = process_start(os.getpid())
    if started is not None:
        tags[PROCESS_START_TAG] = started
    return tags


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def owner_gone(tags):
    """True when the run's owner ran on this host and is no longer running; False when it still runs;
    None when this host cannot tell (another host, or a run that recorded no owner)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    pid = int(tags[PID_TAG])
    if not pid_alive(pid):
        return True
    recorded = tags.get(PROCESS_START_TAG)
    if recorded is not None:
        started = process_start(pid)
        return started is not None and started != recorded  # the pid now belongs to another process
    return False


def describe_owner(tags):
    """'pid 123 on host-a', as recorded."""
    return f"pid {tags.get(PID_TAG, '?')} on {tags.get(HOST_TAG, '?')}"


def lost_reason(tags):
    """Why a run left RUNNING by its gone owner is ended FAILED: its `error` tag."""
    return f"its process ({describe_owner(tags)}) ended without closing the run"
