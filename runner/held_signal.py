"""SIGUSR2 held between the jobs of one process, so that a preemption never cuts a job's record in half.

submitit sends SIGUSR2 before a Slurm job's time limit or when it is preempted; its handler
checkpoints the job, requeues it and exits. A process that runs several jobs in turn (a batched
launcher's share, a search's worker) holds the signal while they run and hands it on between two
(HeldSignal.hand_over). Stdlib only: Hydra's plugin scan imports the launchers that use it.
"""

import signal
import threading


class HeldSignal:
    """Holds SIGUSR2 while jobs run, when someone handles it (submitit: preemption or time limit).

    The signal is noted, and handed to its handler by `hand_over()` between two jobs. A job that
    trains takes it on itself (its runner.checkpoint.Checkpointer saves at its next safe point, then
    hands it here and ends its run KILLED), so the process stops with that job's checkpoint in its
    folder; one noted before the job's training began stops it at its first safe point (`pending`);
    one that came while a job was recorded is handed here when the recording is done
    (Checkpointer.release).
    """

    notes_only = True  # the handler (this object) only notes the signal: see Checkpointer.release

    def __init__(self):
        self.previous, self.pending = None, False

    def __enter__(self):
        handler = signal.getsignal(signal.SIGUSR2)
        if callable(handler) and threading.current_thread() is threading.main_thread():
            self.previous = handler
            signal.signal(signal.SIGUSR2, self)
        return self

    def __exit__(self, *exc):
        self._restore()
        return False

    def __call__(self, signum, frame):
        self.pending = True

    def _restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGUSR2, self.previous)

    def hand_over(self):
        """If the signal came, hand it to its handler now (submitit checkpoints, requeues the job, exits)."""
        if not self.pending:
            return
        handler, self.previous, self.pending = self.previous, None, False
        signal.signal(signal.SIGUSR2, handler)
        handler(signal.SIGUSR2, None)
        raise KeyboardInterrupt  # a handler that did not end the process: stop as Ctrl-C does
