"""What nn-run, nn-rerun and nn-compare print: a person's lines plainly on stdout, warnings and errors on stderr.

Progress, results and where a run is go to stdout as bare lines (the docs show them as printed);
a warning or an error goes to stderr and says what it is. A run's timestamped log is its
`run.log` (Hydra's file handler, conf/hydra/job_logging/console.yaml). No Hydra here.
"""

import logging
import sys


class ConsoleFormatter(logging.Formatter):
    """An INFO record as its bare message; any other level names itself and its logger (`WARNING [name]: ...`)."""

    def __init__(self):
        super().__init__("%(message)s")

    def format(self, record):
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname} [{record.name}]: {message}"


class BelowWarning(logging.Filter):
    """Passes what is not a warning or an error (those go to stderr)."""

    def filter(self, record):
        return record.levelno < logging.WARNING


class ConsoleHandler(logging.StreamHandler):
    """A stream handler that configure() installed (and replaces when called again)."""


def configure(level=logging.INFO):
    """The console as nn-run's job logging has it, for a command that is not a Hydra app (nn-rerun, nn-compare).

    Called again (a command run twice in one process), it replaces its handlers with ones on the
    current sys.stdout and sys.stderr.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ConsoleHandler)]:
        root.removeHandler(handler)
    out = ConsoleHandler(sys.stdout)
    out.addFilter(BelowWarning())
    err = ConsoleHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(ConsoleFormatter())
        root.addHandler(handler)
    root.setLevel(level)
