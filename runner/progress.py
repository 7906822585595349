"""A one-line progress bar on stderr for a run in a terminal: iterations/s, latest error, ETA.

The bar only draws; the training loop reaches it through train()'s `on_progress` hook, which is
called between runs of iterations, never inside one, and through `on_log(step, scores)`.
"""

import shutil
import sys
import time
from contextlib import contextmanager

REDRAW_SECONDS = 0.1  # a terminal needs no more than ten frames a second
BAR_WIDTH = 24
CLEAR_LINE = "\r\x1b[K"  # carriage return, then erase to the end of the line


def wanted(stream, multirun):
    """A bar is drawn for a single run whose stream is a terminal, never inside a sweep."""
    return not multirun and stream.isatty()


def duration(seconds):
    """12.3s under a minute, else M:SS, or H:MM:SS from an hour."""
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Progress of `total` iterations, redrawn in place on `stream`; disabled, it does nothing."""

    def __init__(self, total, enabled=True, stream=None, clock=time.monotonic, columns=None):
        self.total, self.enabled, self.clock, self.columns = total, enabled, clock, columns
        self.stream = stream or sys.stderr
        self.started = clock()
        self.done, self.error = 0, None
        self._drawn_at = None
        self._visible = False

    def line(self, now):
        """The bar's text at time `now`."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        filled = BAR_WIDTH * self.done // self.total
        text = (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * self.done // self.total:3d}% "
                f"{self.done}/{self.total} {rate:,.0f} it/s")
        if self.error is not None:
            text += f" error {self.error:.4g}"
        if self.done >= self.total:
            return text + f" in {duration(elapsed)}"
        eta = (self.total - self.done) / rate if rate > 0 else None
        return text + f" ETA {duration(eta) if eta is not None else '?'}"

    def draw(self):
        now = self.clock()
        # a line that wraps could not be redrawn in place: cut it to the terminal's width
        columns = self.columns or shutil.get_terminal_size().columns
        self.stream.write(CLEAR_LINE + self.line(now)[:columns - 1])
        self.stream.flush()
        self._drawn_at, self._visible = now, True

    def clear(self):
        """Erase the bar so that other output starts on a clean line."""
        if self._visible:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._visible = False

    def update(self, done):
        """on_progress hook: `done` iterations have finished; redraws at most every REDRAW_SECONDS."""
        self.done = done
        if self._drawn_at is None or self.clock() - self._drawn_at >= REDRAW_SECONDS:
            self.draw()

    def close(self):
        """Draw the final state and end the line."""
        if self.enabled and self._drawn_at is not None:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
            self._visible = False

    def wrap_log(self, on_log):
        """train()'s on_log(step, scores), erasing the bar first so its lines print cleanly; redraws after.
        Returns what on_log returns (True stops training)."""
        if not self.enabled:
            return on_log

        def logged(step, scores):
            self.clear()
            stop = on_log(step, scores)
            self.error = scores.error
            self.draw()
            return stop  # train() stops when on_log says so

        return logged

    @property
    def train_hooks(self):
        """Keyword arguments for train() that feed this bar ({} when disabled)."""
        return {"on_progress": self.update} if self.enabled else {}


@contextmanager
def progress_bar(total, enabled, stream=None):
    """A ProgressBar whose line is ended when the block exits, also on an error or Ctrl-C."""
    bar = ProgressBar(total, enabled, stream)
    try:
        yield bar
    finally:
        bar.close()
