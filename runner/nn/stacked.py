"""K networks of one shape trained together, full batch: the weights of layer k as one (K, in, out) array.

A sweep over seeds or learning rates of a small network spends its time in NumPy call overhead,
not arithmetic: one call on stacked arrays does the work of K calls. Every operation is the one
runner.nn.training performs, in the same order, through `np.matmul` broadcasting over the network
axis (each network's product is the same BLAS call on the same operands as np.dot's, transposed
views included; `np.einsum` is not bitwise identical) and element-wise ufuncs on the stacked
buffers. So each network ends with the bits it would have if trained alone, and its scores are
computed by the same functions on its own slice. Per-network learning rates are a (K, 1, 1)
array; a rate of 1.0 multiplies exactly.

A network whose weights become NaN or inf is reported as diverged (non-finite weights stay
non-finite, so the check at each logged step finds it, and it leaves the stack there); its
neighbours are unaffected, since no operation mixes networks. The caller retrains it alone to
get runner.nn.training's exact DivergenceError. A network its caller stops at a logged step (a
pruned trial) leaves the stack the same way.
"""

import numpy as np

from runner.nn.activations import get_activation, get_output, run_ops
from runner.nn.metrics import Scores, correct_count, mean_abs
from runner.nn.training import HeldOut, TrainResult, held_out_splits, stacked


def swap(a):
    """Each network's matrix transposed, as a view (the single path's `.T`)."""
    return np.swapaxes(a, -1, -2)


class StackedBackprop:
    """Buffers and compiled operations of one full-batch iteration of K networks of one shape."""

    def __init__(self, initials, X, y, lrs, hidden_activation="sigmoid", output_activation="sigmoid"):
        hidden, output = get_activation(hidden_activation), get_output(output_activation)
        count, rows = len(initials), len(y)
        last = len(initials[0]) - 1
        acts = [output if k == last else hidden for k in range(last + 1)]
        self.X, self.y, self.count = X, y, count
        w_shapes = [(count, *w.shape) for w in initials[0]]
        self.weights_flat, weights = stacked(w_shapes)
        for k, w in enumerate(weights):
            w[...] = np.stack([initial[k] for initial in initials])
        self.weights = weights
        out_shapes = [(count, rows, s[2]) for s in w_shapes]
        layers_flat, outs = stacked(out_shapes)
        layers = [X] + outs
        slopes_flat, slopes = stacked(out_shapes)
        deltas = [np.empty(s) for s in out_shapes]
        grads_flat, grads = stacked(w_shapes)
        self.layers, self.deltas = layers, deltas

        forward = []
        for k, (w, act, out) in enumerate(zip(weights, acts, outs)):
            forward.append((np.matmul, (layers[k], w, out)))
            forward += act.forward_ops(out)
        self.forward_ops = forward
        self.error_ops = [(np.subtract, (y, layers[-1], deltas[-1]))]

        if hidden is output:
            update = list(output.slope_ops(layers_flat, slopes_flat))
        else:
            update = [op for k in range(last + 1) for op in acts[k].slope_ops(layers[k + 1], slopes[k])]
        update += output.backward_ops(deltas[last], layers[last + 1], slopes[last])
        for k in range(last, 0, -1):
            update.append((np.matmul, (deltas[k], swap(weights[k]), deltas[k - 1])))
            update += hidden.backward_ops(deltas[k - 1], layers[k], slopes[k - 1])
        for k in range(last, -1, -1):  # the seed computes the last layer's update first
            update.append((np.matmul, (swap(layers[k]), deltas[k], grads[k])))
        lrs = np.asarray(lrs, dtype=np.float64)
        if np.any(lrs != 1.0):  # each network's own rate, element by element, as runner.nn.training multiplies
            per_element = np.concatenate([np.broadcast_to(lrs[:, None, None], g.shape).ravel() for g in grads])
            update.append((np.multiply, (grads_flat, per_element, grads_flat)))
        update.append((np.add, (self.weights_flat, grads_flat, self.weights_flat)))
        self.update_ops = update
        self.ops = forward + self.error_ops + update

    def network_weights(self, index):
        """Network `index`'s matrices, as views (C-contiguous)."""
        return [w[index] for w in self.weights]


@np.errstate(over="ignore", invalid="ignore")  # as runner.nn.training.train: saturation is fine, NaN is reported
def train_stacked(initials, X, y, *, lrs, iterations, log_every, hidden_activation="sigmoid",
                  output_activation="sigmoid", X_test=None, y_test=None, X_val=None, y_val=None, classify=False,
                  on_logs=None):
    """Train K networks (`initials`: K lists of weight matrices of one shape) full batch on the same data.

    Returns (results, diverged): a runner.nn.training.TrainResult per network, bitwise what
    runner.nn.training.train gives for that network alone (same weights, last output, scores at
    the same steps, the held-out splits `X_test` and `X_val` included), and the sorted indices of
    networks whose weights became NaN or inf (their results are meaningless: retrain them alone
    for the DivergenceError).
    `on_logs` (one on_log(step, scores) or None per network) is called with each network's points,
    as train calls its on_log; a network whose on_log returns True before `iterations` stops there
    as train stops (TrainResult.stopped_at). A network that stops or diverges at a logged step
    leaves the stack: the others go on in a stack rebuilt from their weights, bit for bit as before.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    splits = held_out_splits(X_test, y_test, X_val, y_val)
    results = [TrainResult(weights=list(initial)) for initial in initials]
    on_logs = on_logs or [None] * len(initials)
    active, diverged = list(range(len(initials))), []  # the networks in the stack, in order

    def build():
        """The stack of the active networks, from their current weights, with their held-out evaluators."""
        net = StackedBackprop([results[n].weights for n in active], X, y, [lrs[n] for n in active],
                              hidden_activation, output_activation)
        for k, n in enumerate(active):
            results[n].weights = net.network_weights(k)
        held_out = [HeldOut(results[n].weights, splits, hidden_activation, output_activation, classify)
                    for n in active]
        return net, held_out, net.forward_ops + net.error_ops

    def record(step):
        """Score every active network at `step`; returns the networks that leave the stack here."""
        run_ops(forward_and_error)
        finite = np.logical_and.reduce([np.isfinite(w).all(axis=(1, 2)) for w in net.weights])
        leaving = []
        for k, n in enumerate(active):
            if not finite[k]:  # diverged: no point for it (train raises at this step's check)
                diverged.append(n)
                leaving.append(n)
                continue
            error, prediction = net.deltas[-1][k], net.layers[-1][k]
            accuracy = correct_count(y, prediction) / len(y) if classify else None
            scores = Scores(mean_abs(error), train_accuracy=accuracy, **held_out[k].measure())
            results[n].steps.append(step)
            results[n].history.append(scores)
            if on_logs[n] is not None and on_logs[n](step, scores) and step < iterations:
                results[n].stopped_at = step
                leaving.append(n)
        return leaving

    net, held_out, forward_and_error = build()
    i = 0
    while i < iterations:
        if i % log_every == 0:
            leaving = record(i)
            if leaving:
                for n in leaving:  # a stopped network keeps the weights scored at step i
                    results[n].weights = [w.copy() for w in results[n].weights]
                active = [n for n in active if n not in leaving]
                if not active:
                    break
                net, held_out, forward_and_error = build()
                run_ops(forward_and_error)  # the update needs this step's forward pass in the new buffers
            run_ops(net.update_ops)
            i += 1
        stop = min(iterations, (i // log_every + 1) * log_every)
        iteration = net.ops
        for _ in range(i, stop):
            for func, args in iteration:
                func(*args)
        i = stop
    if active:
        last_outputs = net.layers[-1].copy()  # the final iteration's forward pass: what the seed prints
        leaving = record(iterations)  # only a diverged network leaves at the end
        for k, n in enumerate(active):
            if n not in leaving:
                results[n].last_output = last_outputs[k]
                results[n].weights = [w.copy() for w in results[n].weights]
    return results, sorted(diverged)
