"""The progress bar: its line, the training loop's progress hook, and when nn-run draws it."""

import io
import os
import pty
import re
import subprocess

import numpy as np
import pytest
from conftest import NN_RUN
from seed_program import X, Y

from runner.nn import training
from runner.nn.metrics import Scores
from runner.nn.network import init_weights
from runner.nn.training import train
from runner.progress import CLEAR_LINE, ProgressBar, wanted


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_shows_fraction_rate_error_and_eta():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(60000, stream=out, clock=clock, columns=120)
    clock.now += 2.0
    bar.error = 0.0123456
    bar.update(20000)
    assert out.getvalue() == (CLEAR_LINE +
                              "[########................]  33% 20000/60000 10,000 it/s error 0.01235 ETA 4.0s")
    clock.now += 4.0
    bar.update(60000)
    bar.close()
    assert out.getvalue().endswith(
        CLEAR_LINE + "[########################] 100% 60000/60000 10,000 it/s error 0.01235 in 6.0s\n")


def test_bar_redraws_at_most_ten_times_a_second_and_formats_long_etas():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(1_000_000, stream=out, clock=clock, columns=120)
    clock.now += 0.5
    bar.update(100)  # first update draws
    for done in range(101, 200):
        bar.update(done)  # same instant: no redraw
    assert out.getvalue().count(CLEAR_LINE) == 1
    clock.now += 0.5
    bar.update(200)
    assert out.getvalue().count(CLEAR_LINE) == 2
    assert out.getvalue().endswith("200/1000000 200 it/s ETA 1:23:19")  # 999,800 left at 200 it/s
    assert "error" not in out.getvalue()  # no error logged yet


def test_log_lines_print_on_a_clean_line_and_the_bar_comes_back():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(100, stream=out, clock=clock, columns=120)
    clock.now += 1
    bar.update(50)
    bar.wrap_log(lambda step, scores: out.write(f"step {step}: error {scores.error}\n"))(50, Scores(0.25))
    assert out.getvalue().split(CLEAR_LINE)[1:] == [
        "[############............]  50% 50/100 50 it/s ETA 1.0s", "step 50: error 0.25\n",
        "[############............]  50% 50/100 50 it/s error 0.25 ETA 1.0s"]


def test_bar_is_cut_to_the_terminal_width_so_it_never_wraps():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(100, stream=out, clock=clock, columns=40)
    clock.now += 1
    bar.update(25)
    assert out.getvalue() == CLEAR_LINE + "[######..................]  25% 25/100 "  # 39 characters


def test_disabled_bar_is_silent_and_adds_no_hooks():
    out = io.StringIO()
    with_log = []
    bar = ProgressBar(100, enabled=False, stream=out)
    log = bar.wrap_log(lambda step, scores: with_log.append(step))
    assert bar.train_hooks == {}
    log(0, Scores(0.5))
    bar.close()
    assert with_log == [0] and out.getvalue() == ""


def test_wanted_only_for_a_single_run_on_a_terminal():
    assert wanted(Terminal(), multirun=False)
    assert not wanted(Terminal(), multirun=True)
    assert not wanted(io.StringIO(), multirun=False)


@pytest.mark.parametrize("iterations, log_every, batch_size", [(60000, 10000, 0), (1000, 300, 0), (10, 1, 0),
                                                                (5, 10, 0), (700, 200, 2)])
def test_progress_hook_reports_between_runs_and_leaves_the_weights_alone(iterations, log_every, batch_size):
    initial = init_weights([3, 4, 1], np.random.RandomState(1))
    options = dict(iterations=iterations, log_every=log_every, batch_size=batch_size,
                   rng=training.shuffle_rng(1) if batch_size else None)
    plain = train(initial, X, Y, **options)
    if batch_size:
        options["rng"] = training.shuffle_rng(1)
    ticks, logged = [], []
    hooked = train(initial, X, Y, **options, on_progress=ticks.append, on_log=lambda step, scores: logged.append(step))
    assert all(np.array_equal(a, b) for a, b in zip(hooked.weights, plain.weights))  # bit for bit
    assert hooked.errors == plain.errors and logged == plain.steps
    assert ticks == sorted(ticks) and ticks[-1] == iterations
    # a report at least every divergence-check interval (256 iterations of the 4-row seed table)
    assert max(np.diff([0, *ticks])) <= min(log_every, training.CHECK_ROWS // (batch_size or len(Y)))
    assert set(range(log_every, iterations, log_every)) <= set(ticks)  # a report where each log block ends


def run_in_terminal(cwd, *args):
    """Run nn-run with stdin, stdout and stderr on a pseudo-terminal; returns (exit code, all output)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([*NN_RUN, *args], cwd=cwd, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    return process.wait(timeout=120), output.decode()


def test_single_run_in_a_terminal_draws_the_bar_and_keeps_the_job_log(tmp_path, tracking_uri, experiment):
    code, output = run_in_terminal(tmp_path, "train.iterations=30000", "train.log_every=10000",
                                   f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}")
    assert code == 0, output
    assert CLEAR_LINE + "[########################] 100% 30000/30000 " in output
    assert " it/s error " in output and " ETA " in output
    for step in (0, 10000, 20000, 30000):
        assert f"step {step}: error " in output
    # a log line never shares its line with the bar: the bar is erased first
    for line in re.finditer(r"\[\d{4}-\d\d-\d\d [^]]*\]\[runner\.job\]", output):
        assert line.start() == 0 or output[:line.start()].endswith(("\n", CLEAR_LINE))
    (log_file,) = tmp_path.glob("outputs/*/*/*.log")  # Hydra's job log: the step lines, no bar
    job_log = log_file.read_text()
    assert "step 20000: error " in job_log and "it/s" not in job_log


def test_no_bar_when_not_a_terminal_or_in_a_sweep(tmp_path, tracking_uri, experiment):
    store = (f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", "tracking.log_model=false")
    done = subprocess.run([*NN_RUN, "train.iterations=3000", "train.log_every=1000", *store], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "step 2000: error " in done.stdout + done.stderr
    assert "it/s" not in done.stdout + done.stderr and "\r" not in done.stdout + done.stderr
    code, output = run_in_terminal(tmp_path, "-m", "train.lr=0.5,1.0", "train.iterations=3000",
                                   "train.log_every=1000", *store)
    assert code == 0, output
    assert output.count("step 2000: error ") == 2 and "it/s" not in output
