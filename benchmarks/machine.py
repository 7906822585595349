"""When and on what machine a benchmark ran: printed with its figures, so a reader can tell which figure is from where.

Every benchmark calls print_machine() before it measures and print_load("after") when it is done
(the machine is shared: the load average says how noisy the figures are).
"""

import datetime
import os
import platform

import numpy as np
from threadpoolctl import threadpool_info

from runner.tracking.provenance import cpu_model


def blas_kernels():
    """Each BLAS NumPy loaded, as 'openblas 0.3.29 Haswell, 2 threads' (threadpoolctl's view)."""
    return "; ".join(f"{pool.get('internal_api')} {pool.get('version')} {pool.get('architecture') or ''}".rstrip()
                     + f", {pool.get('num_threads')} threads"
                     for pool in threadpool_info() if pool.get("user_api") == "blas") or "none found"


def load_average():
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_line():
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now}; {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"NumPy {np.__version__}, BLAS {blas_kernels()}; {load_average()}")


def print_machine():
    print(f"machine: {machine_line()}", flush=True)


def print_load(when="after"):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M UTC")
    print(f"{when}: {now}, {load_average()}", flush=True)
