"""A run's training checkpoint in its Hydra output folder: written every few seconds of training and when the
run is stopped, read back to continue the same run exactly.

Two files beside the job's `.hydra/`: `checkpoint.npz` (the weights, the mini-batch order, plain
arrays, no pickle) and `checkpoint.json` (the run it belongs to, its config's fingerprint, the step,
the shuffling generator's state, the scores so far, its status). Both are replaced atomically.
When the run finishes the arrays go and the JSON says FINISHED, so that a resumed sweep skips it.

Stops are taken at the training loop's next safe point (every logged step and divergence check,
about every thousand rows of work), never in the middle of an iteration: while training, SIGINT,
SIGTERM and a SIGUSR2 that someone handles (submitit's preemption and time-limit signal) only
mark the stop; the checkpoint is then written and the signal handed to its previous handler. A
signal the process was started ignoring (SIGINT of `cmd &` in a script) stays ignored. A SIGUSR2
after training, while the run is recorded, is not handed on (Checkpointer.release).
"""

import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict

import numpy as np

from runner.config import task_values
from runner.nn.metrics import Scores
from runner.nn.training import TrainState

ARRAYS_FILE = "checkpoint.npz"
STATE_FILE = "checkpoint.json"
RUNNING, FINISHED = "RUNNING", "FINISHED"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for this config; the message is one line for the user."""


class StopHandlerError(RuntimeError):
    """A stop signal's own handler raised (submitit's, for a job timed out more often than it may be requeued):
    the run ends FAILED, and its error says which signal, where the checkpoint is, and what the handler said."""


def config_sha256(cfg):
    """Fingerprint of a run's config (the task's keys, resolved; a sweep job's `hydra` node left out): a
    checkpoint belongs to exactly one config."""
    container = task_values(cfg)
    container.get("tracking", {}).pop("uri", None)  # the store's address may change (a moved server); not the run
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()


def read_meta(folder):
    """The checkpoint.json of `folder` as a dict, or None when there is none."""
    try:
        with open(os.path.join(folder, STATE_FILE)) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def _write_json(folder, meta):
    path = os.path.join(folder, STATE_FILE)
    with open(path + ".tmp", "w") as handle:
        json.dump(meta, handle)
    os.replace(path + ".tmp", path)


def load_state(folder, meta):
    """The TrainState saved in `folder` (meta: its read_meta)."""
    with np.load(os.path.join(folder, ARRAYS_FILE), allow_pickle=False) as arrays:
        weights = [arrays[f"layer_{k}"] for k in range(meta["layers"])]
        order = arrays["order"] if "order" in arrays else None
    history = [Scores(**scores) for scores in meta["history"]]
    return TrainState(meta["step"], weights, order, meta["rng_state"], list(meta["steps"]), history)


def mark_finished(folder, run_id, config_sha, pruned_at_step=None):
    """The run finished: keep only a note that says so (a resumed sweep skips the job); a run stopped early
    (pruned) says at which step, `pruned_at_step`."""
    meta = {"run_id": run_id, "config_sha256": config_sha, "status": FINISHED}
    if pruned_at_step is not None:
        meta["pruned_at_step"] = pruned_at_step
    _write_json(folder, meta)
    try:
        os.remove(os.path.join(folder, ARRAYS_FILE))
    except FileNotFoundError:
        pass


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class Checkpointer:
    """Saves TrainStates of one run into `folder` every `every_seconds` of training and when a stop signal came.

    `before_save()` runs first (the caller writes its buffered metric points, so that none taken
    before the checkpoint's step is lost with the process). Use as a context manager around
    training: it defers the stop signals to the next safe point (module docstring).
    """

    def __init__(self, folder, run_id, config_sha, every_seconds, before_save=None, resumed_at=(),
                 clock=time.monotonic):
        self.folder, self.run_id, self.config_sha = folder, run_id, config_sha
        self.every, self.before_save, self.clock = every_seconds, before_save, clock
        # the first safe point saves at once: a job requeued before its first periodic checkpoint continues its run
        self.last, self.stopped_by, self.previous = -math.inf, None, {}
        self.resumed_at = list(resumed_at)  # the steps this run was resumed from, kept in every checkpoint
        self.saves, self.late = 0, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for signum in STOP_SIGNALS:
                handler = signal.getsignal(signum)
                if handler == signal.SIG_IGN or (signum == signal.SIGUSR2 and not callable(handler)):
                    continue  # ignored where the process was started (`cmd &` in a script), or nobody handles it
                self.previous[signum] = handler
                signal.signal(signum, self._note)
                if getattr(handler, "pending", False):  # noted before training began (runner.held_signal)
                    self.stopped_by = signum  # the first safe point saves at once, then hands it on
        return self

    def __exit__(self, exc_type, *exc):
        held = self.previous.pop(signal.SIGUSR2, None) if exc_type is None else None
        self._restore()
        if held is not None:  # training is over: see release()
            self.previous[signal.SIGUSR2] = held
            signal.signal(signal.SIGUSR2, self._note_late)
        return False

    def _note_late(self, signum, frame):
        self.late = signum

    def release(self):
        """Call once the run is recorded: SIGUSR2 goes to its handler again. One (submitit's time-limit or
        preemption warning) that came after training was only noted, and is dropped: handed on, it would requeue
        the job and throw the recording away, and the job ends by itself now. A handler that itself only notes
        the signal for later (`notes_only`: a batched share's, which has more jobs to run) is handed it.
        Returns True when one came."""
        handler = self.previous.get(signal.SIGUSR2)
        self._restore()
        if self.late is not None and getattr(handler, "notes_only", False):
            handler(self.late, None)
        return self.late is not None

    def _restore(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _note(self, signum, frame):
        if self.stopped_by is None:
            self.stopped_by = signum

    def due(self):
        return self.stopped_by is not None or self.clock() - self.last >= self.every

    def save(self, state):
        """Write `state`, then hand a pending stop signal to the handler it would have reached."""
        if self.before_save is not None:
            self.before_save()
        arrays = {f"layer_{k}": w for k, w in enumerate(state.weights)}
        if state.order is not None:
            arrays["order"] = state.order
        path = os.path.join(self.folder, ARRAYS_FILE)
        with open(path + ".tmp", "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(path + ".tmp", path)
        _write_json(self.folder, {
            "run_id": self.run_id, "config_sha256": self.config_sha, "status": RUNNING, "step": state.step,
            "layers": len(state.weights), "rng_state": state.rng_state, "steps": list(state.steps),
            "history": [asdict(scores) for scores in state.history], "resumed_at": self.resumed_at})
        self.last, self.saves = self.clock(), self.saves + 1
        if self.stopped_by is not None:
            self._deliver(state.step)

    def _deliver(self, step):
        signum, handler = self.stopped_by, self.previous.get(self.stopped_by)
        self._restore()
        if callable(handler):
            try:
                handler(signum, None)  # Ctrl-C's KeyboardInterrupt, nn-run's SIGTERM handler, submitit's requeue
            except Exception as error:
                raise StopHandlerError(f"{signal.Signals(signum).name} at step {step}, checkpoint kept in "
                                       f"{self.folder}; then {type(error).__name__}: {error}") from error
        raise KeyboardInterrupt  # a signal whose handler did not end the run ends it as Ctrl-C does
