"""Full-batch backpropagation on preallocated buffers.

One iteration performs the seed program's arithmetic in the seed's order, each operation
writing into a buffer allocated once, so the default run keeps the seed's bits while skipping
every temporary array. For small networks an iteration costs the number of NumPy calls, not
arithmetic, so the iteration is compiled once into a flat list of `(ufunc, args)` pairs, and
element-wise work that every layer needs at the same moment (the activation slopes, the
weight update) runs as one call over buffers that hold all layers back to back.
"""

from dataclasses import dataclass, field

import numpy as np

from runner.activations import get_activation, run_ops


@dataclass
class TrainResult:
    """Final weights, the output of the last training iteration, and the logged errors.

    `predictions` is what the seed program prints: the network's output in the final
    iteration's forward pass, taken before that iteration's update.
    """

    weights: list
    predictions: np.ndarray = None
    steps: list = field(default_factory=list)
    errors: list = field(default_factory=list)


def stacked(shapes):
    """One flat buffer and a C-contiguous view into it for each shape, in order."""
    flat = np.empty(sum(int(np.prod(s)) for s in shapes))
    views, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        views.append(flat[start:start + size].reshape(shape))
        start += size
    return flat, views


class Backprop:
    """Weights, buffers and the compiled operations of one training iteration."""

    def __init__(self, weights, X, y, lr=1.0, hidden_activation="sigmoid", output_activation="sigmoid"):
        hidden, output = get_activation(hidden_activation), get_activation(output_activation)
        rows, last = len(y), len(weights) - 1
        acts = [output if k == last else hidden for k in range(last + 1)]
        y = np.asarray(y, dtype=np.float64)
        self.weights_flat, self.weights = stacked([w.shape for w in weights])
        for view, w in zip(self.weights, weights):
            view[...] = w
        out_shapes = [(rows, w.shape[1]) for w in weights]
        # layers[0] is the input; layers[k + 1] = activation(layers[k] @ weights[k])
        layers_flat, outs = stacked(out_shapes)
        layers = [np.asarray(X, dtype=np.float64)] + outs
        slopes_flat, slopes = stacked(out_shapes)
        # deltas[k] has the shape of layers[k + 1]; deltas[-1] first holds the error y - output
        deltas = [np.empty(s) for s in out_shapes]
        grads_flat, grads = stacked([w.shape for w in weights])
        self.layers, self.deltas = layers, deltas

        self.forward_ops = []
        for k, w in enumerate(self.weights):
            self.forward_ops.append((np.dot, (layers[k], w, layers[k + 1])))
            self.forward_ops += acts[k].forward_ops(layers[k + 1])
        self.error_ops = [(np.subtract, (y, layers[-1], deltas[-1]))]

        if hidden is output:
            self.update_ops = list(output.slope_ops(layers_flat, slopes_flat))
        else:
            self.update_ops = [op for k in range(last + 1) for op in acts[k].slope_ops(layers[k + 1], slopes[k])]
        self.update_ops += output.backward_ops(deltas[last], layers[last + 1], slopes[last])
        for k in range(last, 0, -1):
            self.update_ops.append((np.dot, (deltas[k], self.weights[k].T, deltas[k - 1])))
            self.update_ops += hidden.backward_ops(deltas[k - 1], layers[k], slopes[k - 1])
        for k in range(last, -1, -1):  # the seed computes the last layer's update first
            self.update_ops.append((np.dot, (layers[k].T, deltas[k], grads[k])))
        if lr != 1.0:  # lr * g == g exactly when lr is 1: skip the call
            self.update_ops.append((np.multiply, (grads_flat, np.array(float(lr)), grads_flat)))
        self.update_ops.append((np.add, (self.weights_flat, grads_flat, self.weights_flat)))

    @property
    def error(self):
        """y - output of the latest forward pass (valid after the error operations ran)."""
        return self.deltas[-1]

    @property
    def prediction(self):
        """Output layer of the latest forward pass."""
        return self.layers[-1]


def mean_abs(error):
    """The seed's progress figure: mean(|y - prediction|)."""
    return float(np.mean(np.abs(error)))


def train(weights, X, y, *, iterations, log_every, lr=1.0, hidden_activation="sigmoid",
          output_activation="sigmoid", on_log=None, on_progress=None, progress_every=None):
    """Train copies of `weights`; record the error every `log_every` steps and after the last.

    The error at step i is taken before that iteration's update, as the seed does; the extra
    point at step `iterations` is the error of the final weights. `on_log(step, error)` is called
    for each point as it is taken, so a caller keeps the history of an interrupted run.
    `on_progress(done)` is called with the number of finished iterations at least every
    `progress_every` iterations and at the end: one call per `progress_every` iterations,
    nothing per iteration.
    """
    net = Backprop(weights, X, y, lr, hidden_activation, output_activation)
    result = TrainResult(weights=net.weights)
    forward_and_error = net.forward_ops + net.error_ops
    iteration = forward_and_error + net.update_ops
    chunk = max(1, progress_every or log_every) if on_progress is not None else log_every

    def record(step):
        value = mean_abs(net.error)
        result.steps.append(step)
        result.errors.append(value)
        if on_log is not None:
            on_log(step, value)

    # Blocks of log_every iterations cut into runs of `chunk`: the block's first iteration
    # records the error, the rest run plainly, so the innermost loop carries no test at all.
    for start in range(0, iterations, log_every):
        end = min(start + log_every, iterations)
        for low in range(start, end, chunk):
            high = min(low + chunk, end)
            if low == start:
                run_ops(forward_and_error)
                record(start)
                run_ops(net.update_ops)
            for _ in range(high - max(low, start + 1)):
                for func, args in iteration:
                    func(*args)
            if on_progress is not None:
                on_progress(high)
    if iterations:
        result.predictions = net.prediction.copy()
    run_ops(forward_and_error)
    record(iterations)
    return result
