"""nn-run's Hydra output folders: a new one for every run and sweep, and one live nn-run in a folder.

Hydra names a run's folder `outputs/DATE/TIME` and a sweep's `multirun/DATE/TIME`, so commands
started in the same second shared one (and sweeps took each other's jobs). conf/config.yaml names
them with the resolver `nn_run.new_folder` (`new_folder`): the folder is made as it is named, so it
is this command's alone, and a command of the same second gets `TIME_2`, `TIME_3`, ... The name is
resolved once, in the command's process; OmegaConf caches it in the config, Hydra copies that cache
into each job's config, and it travels with the config to joblib's, submitit's and Slurm's
processes, so every process of a sweep sees the same folder.

A folder named on the command line (`hydra.sweep.dir=...` to continue a sweep, the
`hydra.run.dir=...` that `nn-run resume` passes) can be in use. `FolderOwnership`, a Hydra callback
(conf/config.yaml), holds an flock on LOCK_FILE in the folder while the run or sweep lives; a
second nn-run that finds it held stops with one line, exit 2, before any MLflow run exists. The
kernel releases the lock when its process ends, however it ends, so a killed sweep can be continued
at once; a sweep's forked workers share it.

A run or sweep that nn-run refuses (a bad value, a refused login) leaves no folder behind: the folders
made for it (by `new_folder`, or by Hydra for a `hydra.run.dir` that did not exist) are noted as they
are made and removed again by `remove_made`, and nothing that was there before: `nn-run resume` runs
in the run's own folder, and a fixed `hydra.run.dir` may hold other runs.
"""

import fcntl
import itertools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from runner import exit_codes
from runner.tracking import run_owner

log = logging.getLogger(__name__)

RESOLVER = "nn_run.new_folder"  # conf/config.yaml: hydra.run.dir and hydra.sweep.dir
LOCK_FILE = ".nn-run.lock"  # in a run's or sweep's folder: held (flock) by the nn-run that uses the folder
SINCE_KEY = "since"  # in LOCK_FILE, beside the owner's host and pid: when it took the folder

_held = {}  # folder -> the open descriptor of its LOCK_FILE, in the process that holds it
_made = {}  # {a folder (absolute): the outermost folder this process made for it}


class FolderInUse(RuntimeError):
    """Another live nn-run holds the folder; the message is one line for the user."""


def new_folder(path):
    """Make and return `path`, or else `path_2`, `path_3`, ...: the first that did not exist.

    mkdir is atomic: of the commands that name one folder in the same instant, exactly one makes it.
    """
    wanted = Path(os.path.abspath(path))
    outermost = first_missing(wanted)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        name = path if number == 1 else f"{path}_{number}"
        try:
            os.mkdir(name)
        except FileExistsError:
            continue
        made = Path(os.path.abspath(name))
        _made[made] = made if outermost in (None, wanted) else outermost  # else the parents it made too
        return name


def first_missing(folder):
    """The outermost folder of `folder`'s (absolute) path that does not exist, or None when `folder` exists."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return missing
        missing = candidate
    return missing


def remove_made(output_dir):
    """Remove the folder made for this run or sweep (closing its log file first), up to the outermost one made
    for it; a parent folder another process has put something in meanwhile stays."""
    folder = Path(os.path.abspath(output_dir))
    made = _made.pop(folder, None)
    if made is None:
        return
    for handler in list(logging.getLogger().handlers):  # Hydra's file handler writes run.log in it
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(folder):
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if not parent.is_relative_to(made):
            break
        try:
            parent.rmdir()  # only when empty: a run started meanwhile keeps its folder
        except OSError:
            break


def register_resolver():
    """Register `nn_run.new_folder` (cached: resolved once per config) unless it is registered already."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, new_folder, use_cache=True)


def hold(key, folder):
    """Hold `folder` (the value of config key `key`) for this process until `release`; FolderInUse if another holds it."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder, LOCK_FILE)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise FolderInUse(f"{key}={folder} is in use by another nn-run ({holder(path)}): "
                          "a folder holds one run or sweep at a time") from None
    except OSError as error:  # a file system without flock (some NFS and Lustre mounts): nothing to hold
        os.close(handle)
        log.warning("%s=%s cannot be locked (%s): another nn-run in this folder would not be stopped",
                    key, folder, error.strerror)
        return
    os.ftruncate(handle, 0)
    os.write(handle, json.dumps({**run_owner.owner_tags(), SINCE_KEY: time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    _held[str(folder)] = handle


def holder(lock_file):
    """'pid 123 on host-a since 2026-12-04 15:20:35', as the holder wrote it, or less when it could not be read."""
    try:
        owner = json.loads(Path(lock_file).read_text())
    except (OSError, ValueError):  # the holder is between taking the lock and writing its name
        return "its process did not say which it is"
    return f"{run_owner.describe_owner(owner)} since {owner.get(SINCE_KEY, '?')}"


def release(folder):
    """Let go of `folder` if this process holds it."""
    handle = _held.pop(str(folder), None)
    if handle is not None:
        os.close(handle)  # closing the descriptor releases the lock


class FolderOwnership(Callback):
    """Hydra callback: the run's or sweep's folder is this nn-run's while it lives (module docstring).

    Registered in conf/config.yaml before the sweep's callback, so a sweep refused here opens no parent run.
    """

    def on_run_start(self, config, **kwargs):
        _own("hydra.run.dir", config.hydra.run.dir, "nn-run: ")

    def on_run_end(self, config, **kwargs):
        release(config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs):
        _own("hydra.sweep.dir", config.hydra.sweep.dir, "nn-run: the sweep cannot start: ",
             "; to continue that sweep, run the same command again once it has ended")

    def on_multirun_end(self, config, **kwargs):
        release(config.hydra.sweep.dir)


def _own(key, folder, prefix, advice=""):
    """Hold `folder` (resolving its name makes a default folder), or stop nn-run with one line, exit 2."""
    path = Path(os.path.abspath(str(folder)))  # a default name: new_folder makes and notes it
    outermost = first_missing(path)
    if outermost is not None:  # a named folder that does not exist yet: holding it makes it
        _made[path] = outermost
    try:
        hold(key, str(folder))
    except FolderInUse as error:
        print(f"{prefix}{error}{advice}", file=sys.stderr)
        sys.exit(exit_codes.BAD_INPUT)
