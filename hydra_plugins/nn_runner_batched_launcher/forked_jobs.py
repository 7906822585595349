"""Run a launcher's shares of jobs in worker processes forked from the sweep's process.

A forked worker starts in milliseconds with everything the sweep's process holds: the composed
configs, the imported modules (a fresh process spends seconds importing MLflow and Hydra before
its first job). Each worker runs one share and sends each of its results as soon as it has it,
so that the sweep's process unpickles them while the workers go on (a share's JobReturns sent in
one piece at its end cost the sweep ~1 s at 256 jobs, after the last job); they come back in order.

The sweep's process freezes its heap (gc.freeze) before the jobs run, as Python's docs advise
before a fork, and again once the results are in. Its hundreds of thousands of long-lived objects
(MLflow's and Hydra's modules, the configs, then the JobReturns) are then left out of the garbage
collector's full passes, which otherwise walk them again and again while each job allocates its
record: at 256 jobs the workers took ~17% longer and the end of the sweep twice as long. A sweep's
process lives for one sweep; cyclic garbage made before a freeze is not collected.
"""

import gc
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


RESULT, DONE, FAILED = "result", "done", "failed"  # what a worker sends: a result, its end, or its error


def _work(call, send, after_fork):
    try:
        if after_fork is not None:
            after_fork()
        call(lambda result: send.send((RESULT, result)))
        send.send((DONE, None))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the job has ended its run KILLED
        sys.exit(INTERRUPTED)
    except BaseException as error:  # noqa: BLE001  handed to the sweep's process, which raises it
        send.send((FAILED, error))


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


def _freeze():
    """Collect the cyclic garbage, then freeze the heap (gc.freeze): garbage frozen would never be freed.

    The configs the sweeper composed to validate the jobs, then dropped, are such garbage (an
    OmegaConf node refers to its parent): ~110 KB a job was frozen with the heap before this collection.
    """
    gc.collect()
    gc.freeze()


def run_in_workers(calls, after_fork=None):
    """Each call in its own forked process (in this process when there is one call); the results of each.

    A call is called with one argument, `emit`, and passes each of its results to it in turn:
    returns [[what call 0 emitted], [what call 1 emitted], ...]. `after_fork` runs first in each
    worker (to drop what must not be shared with the parent, such as database connections).
    Results and errors travel back pickled; a call's error is raised here once every worker has
    ended. When this process is interrupted (Ctrl-C, SIGTERM), the workers end their jobs KILLED
    before it goes on (_stop).
    """
    _freeze()
    if len(calls) == 1:
        results = []
        calls[0](results.append)
        _freeze()
        return [results]
    context = multiprocessing.get_context("fork")
    workers = []
    for call in calls:
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_work, args=(call, send, after_fork))
        process.start()
        send.close()  # the worker holds the sending end: its exit ends the pipe
        workers.append((process, receive))
    results, errors = [[] for _ in workers], []
    try:
        waiting = {receive: n for n, (_, receive) in enumerate(workers)}
        while waiting:  # whichever worker answers or dies first: a dead one must not wait for the others
            for receive in multiprocessing.connection.wait(list(waiting)):
                n = waiting[receive]
                try:
                    kind, value = receive.recv()
                except EOFError:
                    process = workers[n][0]
                    process.join()
                    raise WorkerFailed(f"a worker process ended with exit code {process.exitcode} "
                                       "before handing back its jobs") from None
                if kind == RESULT:
                    results[n].append(value)
                    continue
                del waiting[receive]
                if kind == FAILED:
                    errors.append((n, value))
    except BaseException:
        _stop(process for process, _ in workers)
        raise
    for process, _ in workers:
        process.join()
    _freeze()
    if errors:
        raise min(errors, key=lambda error: error[0])[1]  # the first failing call's, in call order
    return results
