"""Backpropagation on preallocated buffers: full batch (the seed's) or shuffled mini-batches.

One iteration is one weight update. It performs the seed program's arithmetic in the seed's
order, each operation writing into a buffer allocated once, so the default run keeps the seed's
bits while skipping every temporary array. For small networks an iteration costs the number of
NumPy calls, not arithmetic, so the iteration is compiled once into a flat list of
`(ufunc, args)` pairs, and element-wise work that every layer needs at the same moment (the
activation slopes, the weight update) runs as one call over buffers that hold all layers back
to back.

With mini-batches an epoch is ceil(rows / batch_size) iterations over the rows in an order
shuffled at the start of each epoch; the last batch of an epoch holds the remainder rows. Each
update sums over its batch's rows, as the full-batch update sums over all rows.

Weights are checked for NaN and inf at every logged step and whenever about CHECK_ROWS training
rows have gone through an update since the last check (every iteration for batches of
CHECK_ROWS rows or more). A non-finite weight stays non-finite (x + inf, x + nan never become
finite again), so a failed check replays the iterations since the last good check from a saved
copy, one at a time, to name the exact step and layer in a DivergenceError.
"""

from dataclasses import dataclass, field

import numpy as np

from runner.nn.activations import get_activation, get_output, run_ops
from runner.nn.metrics import Scores, correct_count, mean_abs  # noqa: F401  (mean_abs is part of this module's API)

CHECK_ROWS = 1024  # rows of training work between divergence checks; a check costs ~3 us (README: Divergence)
EVAL_ROWS = 4096  # rows per chunk when measuring error/accuracy on a whole data set outside the training buffers


class DivergenceError(ArithmeticError):
    """The update of `step` made the weights of `layers` (indices, as in weights/layer_K.npy) NaN or inf."""

    def __init__(self, step, layers, kind):
        self.step, self.layers, self.kind = step, layers, kind
        names = ", ".join(str(k) for k in layers)
        super().__init__(f"training diverged at step {step}: its update made the weights of layer"
                         f"{'s' if len(layers) > 1 else ''} {names} {kind}; try a smaller learning rate")

    def __reduce__(self):  # a job's error travels back from a launcher's worker process pickled
        return type(self), (self.step, self.layers, self.kind)


@dataclass
class TrainResult:
    """Final weights, the output of the last training iteration, and the logged scores.

    `last_output` is what the seed program prints: in full-batch training, the network's output
    on the training data in the final iteration's forward pass, taken before that iteration's
    update (so one update older than `weights`). With mini-batches no iteration sees every row,
    and it is None. Predictions of the trained network come from `weights` (network.predict).
    `stopped_at` is the logged step at which `on_log` stopped training (a pruned trial), else None;
    then `weights` are the weights scored at that step, `last_output` is None (no iteration ran
    after that forward pass's scores were taken) and the last point of the history is that step's.
    """

    weights: list
    last_output: np.ndarray = None
    steps: list = field(default_factory=list)
    history: list = field(default_factory=list)  # a metrics.Scores per step
    stopped_at: int | None = None

    @property
    def errors(self):
        return [scores.error for scores in self.history]

    @property
    def final(self):
        """Scores of the final weights (the point at step = iterations, or at `stopped_at`)."""
        return self.history[-1]


@dataclass
class TrainState:
    """Everything exact continuation needs at the start of iteration `step`.

    The weights; with mini-batches the row order of the current epoch and the shuffling
    generator's state after its latest shuffle; the steps and scores recorded so far.
    """

    step: int
    weights: list
    order: np.ndarray | None = None
    rng_state: dict | None = None
    steps: list = field(default_factory=list)
    history: list = field(default_factory=list)


def stacked(shapes):
    """One flat buffer and a C-contiguous view into it for each shape, in order."""
    flat = np.empty(sum(int(np.prod(s)) for s in shapes))
    views, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        views.append(flat[start:start + size].reshape(shape))
        start += size
    return flat, views


def forward_ops(X, weights, acts, outs):
    """Operations that fill outs[k] = acts[k](input of layer k @ weights[k]), input X first."""
    ops, layer = [], X
    for w, act, out in zip(weights, acts, outs):
        ops.append((np.dot, (layer, w, out)))
        ops += act.forward_ops(out)
        layer = out
    return ops


class Backprop:
    """Buffers and compiled operations of one iteration over fixed input and target arrays.

    The weights are views into `weights_flat`, shared with the caller (and with other Backprop
    objects over other batch shapes) and updated in place.
    """

    def __init__(self, weights_flat, weights, X, y, lr=1.0, hidden_activation="sigmoid", output_activation="sigmoid"):
        hidden, output = get_activation(hidden_activation), get_output(output_activation)
        rows, last = len(y), len(weights) - 1
        acts = [output if k == last else hidden for k in range(last + 1)]
        self.X, self.y = X, y
        self.weights = weights
        out_shapes = [(rows, w.shape[1]) for w in weights]
        # layers[0] is the input; layers[k + 1] = activation(layers[k] @ weights[k])
        layers_flat, outs = stacked(out_shapes)
        layers = [X] + outs
        slopes_flat, slopes = stacked(out_shapes)
        # deltas[k] has the shape of layers[k + 1]; deltas[-1] first holds the error y - output
        deltas = [np.empty(s) for s in out_shapes]
        grads_flat, grads = stacked([w.shape for w in weights])
        self.layers, self.deltas = layers, deltas

        self.forward_ops = forward_ops(X, weights, acts, outs)
        self.error_ops = [(np.subtract, (y, layers[-1], deltas[-1]))]

        if hidden is output:
            self.update_ops = list(output.slope_ops(layers_flat, slopes_flat))
        else:
            self.update_ops = [op for k in range(last + 1) for op in acts[k].slope_ops(layers[k + 1], slopes[k])]
        self.update_ops += output.backward_ops(deltas[last], layers[last + 1], slopes[last])
        for k in range(last, 0, -1):
            self.update_ops.append((np.dot, (deltas[k], weights[k].T, deltas[k - 1])))
            self.update_ops += hidden.backward_ops(deltas[k - 1], layers[k], slopes[k - 1])
        for k in range(last, -1, -1):  # the seed computes the last layer's update first
            self.update_ops.append((np.dot, (layers[k].T, deltas[k], grads[k])))
        if lr != 1.0:  # lr * g == g exactly when lr is 1: skip the call
            self.update_ops.append((np.multiply, (grads_flat, np.array(float(lr)), grads_flat)))
        self.update_ops.append((np.add, (weights_flat, grads_flat, weights_flat)))
        self.ops = self.forward_ops + self.error_ops + self.update_ops

    @property
    def error(self):
        """y - output of the latest forward pass (valid after the error operations ran)."""
        return self.deltas[-1]

    @property
    def prediction(self):
        """Output layer of the latest forward pass."""
        return self.layers[-1]


class Evaluator:
    """Error and accuracy of the current weights on a fixed data set, in chunks of preallocated rows."""

    def __init__(self, weights, X, y, hidden_activation, output_activation, classify):
        hidden, output = get_activation(hidden_activation), get_output(output_activation)
        acts = [hidden] * (len(weights) - 1) + [output]
        self.rows, self.entries, self.classify = len(y), y.size, classify
        chunk = min(len(y), EVAL_ROWS)
        outs = [np.empty((chunk, w.shape[1])) for w in weights]
        error = np.empty((chunk, y.shape[1]))
        self.chunks = []
        for start in range(0, len(y), chunk):
            stop = min(start + chunk, len(y))
            n = stop - start
            chunk_outs = [out[:n] for out in outs]
            ops = forward_ops(X[start:stop], weights, acts, chunk_outs)
            ops.append((np.subtract, (y[start:stop], chunk_outs[-1], error[:n])))
            self.chunks.append((ops, y[start:stop], chunk_outs[-1], error[:n]))

    def measure(self):
        """(mean |y - prediction|, accuracy or None when not a classification)."""
        total, correct = 0.0, 0
        for ops, y, out, error in self.chunks:
            run_ops(ops)
            total += float(np.sum(np.abs(error, out=error)))
            if self.classify:
                correct += correct_count(y, out)
        return total / self.entries, (correct / self.rows if self.classify else None)


def held_out_splits(X_test=None, y_test=None, X_val=None, y_val=None):
    """{"test": (X, y), "val": (X, y)} of the held-out splits given (X not None), as contiguous float64 arrays.

    The keys are the prefixes of their metrics.Scores fields (test_error, val_accuracy, ...).
    """
    given = {"test": (X_test, y_test), "val": (X_val, y_val)}
    return {prefix: (np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(y, dtype=np.float64))
            for prefix, (X, y) in given.items() if X is not None}


class HeldOut:
    """Error and accuracy of the current weights on each held-out split (held_out_splits), measured alike."""

    def __init__(self, weights, splits, hidden_activation, output_activation, classify):
        self.evaluators = {prefix: Evaluator(weights, X, y, hidden_activation, output_activation, classify)
                           for prefix, (X, y) in splits.items()}

    def measure(self):
        """The held-out splits' metrics.Scores fields: {"test_error": ..., "test_accuracy": ..., "val_error": ...}."""
        scores = {}
        for prefix, evaluator in self.evaluators.items():
            scores[f"{prefix}_error"], scores[f"{prefix}_accuracy"] = evaluator.measure()
        return scores


class FullBatch:
    """Every iteration updates on all training rows, in place; the training error comes from its buffers."""

    def __init__(self, net, classify):
        self.net, self.classify = net, classify
        self.iteration = net.ops
        self.forward_and_error = net.forward_ops + net.error_ops

    def run(self, start, stop):
        """Iterations start .. stop - 1."""
        iteration = self.iteration
        for _ in range(start, stop):
            for func, args in iteration:
                func(*args)

    def measure(self):
        """Training (error, accuracy) of the current weights; `finish` then completes the iteration."""
        run_ops(self.forward_and_error)
        accuracy = correct_count(self.net.y, self.net.prediction) / len(self.net.y) if self.classify else None
        return mean_abs(self.net.error), accuracy

    def finish(self, step):
        run_ops(self.net.update_ops)

    def last_output(self):
        """The output of the latest iteration's forward pass: what the seed prints."""
        return self.net.prediction.copy()

    def save(self):
        pass  # the weights are the whole state

    def restore(self):
        pass

    def state(self):
        return None, None

    def set_state(self, order, rng_state):
        pass


class MiniBatches:
    """Iteration i updates on batch i % n_batches of an order that is shuffled when an epoch starts."""

    def __init__(self, weights_flat, weights, X, y, batch_size, rng, lr, hidden_activation, output_activation,
                 classify):
        rows = len(y)
        self.X, self.y, self.rng = X, y, rng
        self.weights = weights
        self.order = np.arange(rows)
        self.batches = [self.order[start:start + batch_size] for start in range(0, rows, batch_size)]

        def program(n):
            return Backprop(weights_flat, weights, np.empty((n, X.shape[1])), np.empty((n, y.shape[1])), lr,
                            hidden_activation, output_activation)

        full = program(batch_size)
        self.programs = [full] * (rows // batch_size) + ([program(rows % batch_size)] if rows % batch_size else [])
        self.evaluator = Evaluator(weights, X, y, hidden_activation, output_activation, classify)
        # the order and RNG state after the latest shuffle: what a replay from a step of this epoch needs
        self.epoch_state = self.saved = (self.order.copy(), rng.bit_generator.state)

    def run(self, start, stop):
        """Iterations start .. stop - 1: shuffle at an epoch's start, gather the batch's rows, update."""
        take, X, y, order, batches, programs = np.take, self.X, self.y, self.order, self.batches, self.programs
        n_batches = len(batches)
        for i in range(start, stop):
            j = i % n_batches
            if j == 0:
                self.rng.shuffle(order)
                self.epoch_state = (order.copy(), self.rng.bit_generator.state)
            net, rows = programs[j], batches[j]
            take(X, rows, 0, net.X, "clip")  # "clip": no bounds check, and no buffered copy of the output
            take(y, rows, 0, net.y, "clip")
            for func, args in net.ops:
                func(*args)

    def measure(self):
        return self.evaluator.measure()

    def finish(self, step):
        self.run(step, step + 1)

    def last_output(self):
        """No iteration sees every row: there is no whole-table output to report."""
        return None

    def save(self):
        self.saved = self.epoch_state

    def restore(self):
        order, state = self.saved
        np.copyto(self.order, order)
        self.rng.bit_generator.state = state

    def state(self):
        """(the current epoch's row order, the generator's state after its latest shuffle)."""
        return self.order.copy(), self.rng.bit_generator.state

    def set_state(self, order, rng_state):
        np.copyto(self.order, order)
        self.rng.bit_generator.state = rng_state
        self.epoch_state = self.saved = (self.order.copy(), rng_state)


def shuffle_rng(seed):
    """The generator that shuffles mini-batches: its own stream derived from the run's seed, apart from the init's."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def non_finite(weights):
    """(indices of the matrices holding NaN or inf, 'nan' or 'inf')."""
    bad = [k for k, w in enumerate(weights) if not np.isfinite(w).all()]
    return bad, ("nan" if any(np.isnan(weights[k]).any() for k in bad) else "inf")


class DivergenceGuard:
    """Checks the weights for NaN and inf, keeping the last good copy to replay from and name the first bad update."""

    def __init__(self, weights_flat, weights, steps, start=0):
        self.weights_flat, self.weights, self.steps = weights_flat, weights, steps
        self.finite = np.empty(weights_flat.shape, dtype=bool)
        self.saved, self.good = weights_flat.copy(), start  # the weights at step `good` passed the last check

    def check(self, step):
        """Raise DivergenceError if the weights at `step` are not all finite, else save them."""
        np.isfinite(self.weights_flat, out=self.finite)
        if self.finite.all():
            np.copyto(self.saved, self.weights_flat)
            self.steps.save()
            self.good = step
            return
        np.copyto(self.weights_flat, self.saved)
        self.steps.restore()
        for i in range(self.good, step):
            self.steps.run(i, i + 1)
            bad, kind = non_finite(self.weights)
            if bad:
                raise DivergenceError(i, bad, kind)
        raise DivergenceError(step - 1, *non_finite(self.weights))  # not reached: the replay is deterministic


@np.errstate(over="ignore", invalid="ignore")  # exp overflowing in a saturated sigmoid is fine; NaN is caught
def train(weights, X, y, *, iterations, log_every, lr=1.0, hidden_activation="sigmoid", output_activation="sigmoid",
          batch_size=0, rng=None, X_test=None, y_test=None, X_val=None, y_val=None, classify=False, on_log=None,
          on_progress=None, resume=None, checkpoints=None):
    """Train copies of `weights`; record scores every `log_every` steps and after the last.

    The scores at step i are taken before iteration i's update, as the seed does; the extra
    point at step `iterations` scores the final weights. `batch_size` 0 (or the number of rows)
    is full batch; otherwise `rng` (a np.random.Generator, see shuffle_rng) shuffles the rows.
    `X_test`, `y_test` add test scores, `X_val`, `y_val` validation scores, `classify` accuracies.
    `on_log(step, scores)` is called for each point as it is taken, so a caller keeps the history
    of an interrupted run; when it returns True at a step before `iterations`, training stops there
    (TrainResult.stopped_at): the points up to it are bit for bit those of a run that goes on. At
    step `iterations` training is over anyway: its answer is ignored.
    `on_progress(done)` is called with the number of finished iterations between runs of them,
    at every logged step and divergence check (about every CHECK_ROWS rows of work): a progress
    bar costs the loop one call per run, nothing per iteration.
    `resume` (a TrainState) continues a run from its step, bit for bit as if it had not stopped.
    `checkpoints` (an object with `due()` and `save(state)`) is asked at the same moments whether
    a checkpoint is due and handed the TrainState of that step.
    Raises DivergenceError as soon as a weight becomes NaN or inf.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    weights_flat, views = stacked([w.shape for w in weights])
    for view, w in zip(views, weights):
        view[...] = w
    rows = len(y)
    if batch_size in (0, rows):
        net = Backprop(weights_flat, views, X, y, lr, hidden_activation, output_activation)
        steps = FullBatch(net, classify)
        batch_rows = rows
    else:
        if rng is None:
            raise ValueError("mini-batches need an rng to shuffle with")
        steps = MiniBatches(weights_flat, views, X, y, batch_size, rng, lr, hidden_activation, output_activation,
                            classify)
        batch_rows = batch_size
    held_out = HeldOut(views, held_out_splits(X_test, y_test, X_val, y_val), hidden_activation, output_activation,
                       classify)
    result = TrainResult(weights=views)
    i = 0
    if resume is not None:
        for view, w in zip(views, resume.weights):
            view[...] = w
        steps.set_state(resume.order, resume.rng_state)
        result.steps, result.history, i = list(resume.steps), list(resume.history), resume.step

    def record(step):
        error, train_accuracy = steps.measure()
        scores = Scores(error, train_accuracy=train_accuracy, **held_out.measure())
        result.steps.append(step)
        result.history.append(scores)
        return on_log is not None and bool(on_log(step, scores))

    check = DivergenceGuard(weights_flat, views, steps, start=i).check
    check_every = max(1, CHECK_ROWS // batch_rows)
    while i < iterations:
        if checkpoints is not None and checkpoints.due():
            order, rng_state = steps.state()
            checkpoints.save(TrainState(i, [w.copy() for w in views], order, rng_state, list(result.steps),
                                        list(result.history)))
        check(i)
        stop = min(iterations, (i // log_every + 1) * log_every, (i // check_every + 1) * check_every)
        if i % log_every == 0:
            if record(i):  # asked to stop: the weights are those scored at step i
                result.stopped_at = i
                return result
            steps.finish(i)
            i += 1
        steps.run(i, stop)
        i = stop
        if on_progress is not None:
            on_progress(i)
    check(iterations)
    if iterations:
        result.last_output = steps.last_output()
    record(iterations)
    return result
