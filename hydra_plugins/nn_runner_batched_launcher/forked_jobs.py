"""Run a launcher's jobs in worker processes forked from the sweep's process.

A forked worker starts in milliseconds with everything the sweep's process holds: the composed
configs, the trained networks, the imported modules (a fresh process spends seconds importing
MLflow and Hydra before its first job). Each worker runs whole jobs; results come back in job order.
"""

import multiprocessing
import os

_CALLS = []  # the jobs of the current call to run_in_workers; a forked worker inherits them


def _call(index):
    return _CALLS[index]()


def workers_for(n_jobs, jobs):
    """How many processes run `jobs` jobs: n_jobs, or every CPU this process may use when n_jobs is -1."""
    cpus = len(os.sched_getaffinity(0))
    return max(1, min(jobs, cpus if n_jobs == -1 else n_jobs))


def run_in_workers(calls, workers, after_fork=None):
    """[call() for call in calls], computed by `workers` forked processes (in this one when workers is 1).

    `after_fork` runs first in each worker (to drop what must not be shared with the parent,
    such as database connections). A call's result must pickle.
    """
    global _CALLS
    if workers <= 1:
        return [call() for call in calls]
    _CALLS = calls
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=after_fork)
    try:
        results = pool.map(_call, range(len(calls)), chunksize=1)
        pool.close()  # workers exit on their own, flushing their output
        pool.join()
        return results
    except BaseException:  # Ctrl-C reaches the workers too; do not leave any behind
        pool.terminate()
        pool.join()
        raise
    finally:
        _CALLS = []
