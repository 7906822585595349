"""A single run's Hydra output folder: Hydra makes it before the task starts; a run nn-run refuses leaves none.

A Hydra callback (conf/config.yaml, hydra.callbacks.run_folder) notes, before Hydra makes
`hydra.run.dir`, the outermost folder of it that does not exist yet. A refused run removes that
folder and the ones below it again, and nothing that was there before: `nn-run resume` runs in the
run's own folder, and a fixed `hydra.run.dir` may hold other runs.
"""

import logging
import os
import shutil
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

_made = {}  # {the run's folder: the outermost folder Hydra is about to make for it}


def first_missing(folder):
    """The outermost folder of `folder`'s path that does not exist, or None when `folder` exists."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return missing
        missing = candidate
    return missing


class RunFolder(Callback):
    """Notes which folders Hydra makes for a single run (`nn-run` without -m)."""

    def on_run_start(self, config, **kwargs):
        try:
            folder = Path(os.path.abspath(OmegaConf.select(config, "hydra.run.dir")))
        except Exception:  # noqa: BLE001  a folder named by what only the job knows: left alone
            return
        made = first_missing(folder)
        if made is not None:
            _made[folder] = made


def remove_made(output_dir):
    """Remove the folder Hydra made for this run (closing its log file first), up to the outermost one it made;
    a folder another process has put something in meanwhile stays."""
    folder = Path(output_dir)
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
