"""Run a launcher's shares of jobs in worker processes forked from the sweep's process.

A forked worker starts in milliseconds with everything the sweep's process holds: the composed
configs, the imported modules (a fresh process spends seconds importing MLflow and Hydra before
its first job). Each worker runs one share; results come back in order.
"""

import multiprocessing
import multiprocessing.connection
import os
import sys
import time

INTERRUPTED = 130  # a worker's exit code after Ctrl-C, as nn-run's
OWN_SIGNAL_SECONDS = 2  # after Ctrl-C (which reaches every worker), how long they get before they are sent SIGTERM
GRACE_SECONDS = 30  # then how long they get to end their runs KILLED before they are killed


def workers_for(n_jobs, jobs):
    """How many processes run `jobs` jobs: n_jobs, or every CPU this process may use when n_jobs is -1."""
    cpus = len(os.sched_getaffinity(0))
    return max(1, min(jobs, cpus if n_jobs == -1 else n_jobs))


class WorkerFailed(RuntimeError):
    """A worker process ended without handing back its result."""


def _work(call, send, after_fork):
    try:
        if after_fork is not None:
            after_fork()
        send.send((True, call()))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the job has ended its run KILLED
        sys.exit(INTERRUPTED)
    except BaseException as error:  # noqa: BLE001  handed to the sweep's process, which raises it
        send.send((False, error))


def _stop(processes):
    """Let the workers end their jobs after an interruption of the sweep's process, then make sure they are gone.

    Ctrl-C in a terminal reaches every worker; a SIGTERM to the sweep's process (`kill`, a
    scheduler) does not, so a worker still running gets one (nn-run ends a run KILLED on SIGTERM).
    """
    processes, deadline = list(processes), time.monotonic() + OWN_SIGNAL_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(GRACE_SECONDS)
        if process.is_alive():
            process.kill()


def run_in_workers(calls, after_fork=None):
    """[call() for call in calls], each call in its own forked process (in this process when there is one call).

    `after_fork` runs first in each worker (to drop what must not be shared with the parent, such
    as database connections). Results and errors travel back pickled. When this process is
    interrupted (Ctrl-C, SIGTERM), the workers end their jobs KILLED before it goes on (_stop).
    """
    if len(calls) == 1:
        return [calls[0]()]
    context = multiprocessing.get_context("fork")
    workers = []
    for call in calls:
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_work, args=(call, send, after_fork))
        process.start()
        send.close()  # the worker holds the sending end: its exit ends the pipe
        workers.append((process, receive))
    try:
        outcomes, waiting = {}, {receive: n for n, (_, receive) in enumerate(workers)}
        while waiting:  # whichever worker answers or dies first: a dead one must not wait for the others
            for receive in multiprocessing.connection.wait(list(waiting)):
                n = waiting.pop(receive)
                try:
                    outcomes[n] = receive.recv()
                except EOFError:
                    process = workers[n][0]
                    process.join()
                    raise WorkerFailed(f"a worker process ended with exit code {process.exitcode} "
                                       "before handing back its jobs") from None
        outcomes = [outcomes[n] for n in range(len(workers))]
    except BaseException:
        _stop(process for process, _ in workers)
        raise
    for process, _ in workers:
        process.join()
    for ok, value in outcomes:
        if not ok:
            raise value
    return [value for _, value in outcomes]
