"""Activation functions as lists of in-place NumPy operations on preallocated buffers.

An operation is a `(ufunc, args)` pair that the training loop calls as `ufunc(*args)`. The
derivative is split in two: `slope_ops` depends on the layer's output alone (so the training
loop can run it on every layer at once), `backward_ops` multiplies the incoming gradient by it.
The order of operations matches the seed program's expressions exactly: floating-point
multiplication is not associative and the default run must keep the seed's bits.

An output activation comes with the loss it is trained on; its `backward_ops` turn the error
y - output into delta = -dLoss/dz:
- sigmoid, squared error L = 0.5 * sum((y - p)**2): dL/dp = -(y - p), so delta = (y - p) * (p * (1 - p)),
  the slope first, as the seed's `l2_error * nonlin(l2, deriv=True)` computes it;
- softmax, cross-entropy L = -sum(y * log p) over one-hot (or any row-sum-1) targets:
  dL/dz_j = sum_i (-y_i / p_i) * p_i * (delta_ij - p_j) = p_j * sum_i y_i - y_j = p_j - y_j,
  so delta = y - p, the error itself, and softmax's own Jacobian is never formed.
"""

from functools import partial

import numpy as np

# 0-d arrays instead of Python floats: same values and bits, half the per-call cost
ONE = np.array(1.0)
ZERO = np.array(0.0)


class Sigmoid:
    """1 / (1 + exp(-z)); derivative out * (1 - out), applied as grad * (out * (1 - out)) like the seed's nonlin."""

    name = "sigmoid"

    @staticmethod
    def forward_ops(z):
        return [(np.negative, (z, z)), (np.exp, (z, z)), (np.add, (z, ONE, z)), (np.divide, (ONE, z, z))]

    @staticmethod
    def slope_ops(out, slope):
        """The seed's `nonlin(out, deriv=True)`: out * (1 - out)."""
        return [(np.subtract, (ONE, out, slope)), (np.multiply, (out, slope, slope))]

    @staticmethod
    def backward_ops(grad, out, slope):
        """The seed's `error * nonlin(out, deriv=True)`: the error times the slope computed first."""
        return [(np.multiply, (grad, slope, grad))]


class Tanh:
    """tanh(z); derivative 1 - out**2."""

    name = "tanh"

    @staticmethod
    def forward_ops(z):
        return [(np.tanh, (z, z))]

    @staticmethod
    def slope_ops(out, slope):
        return [(np.multiply, (out, out, slope)), (np.subtract, (ONE, slope, slope))]

    @staticmethod
    def backward_ops(grad, out, slope):
        return [(np.multiply, (grad, slope, grad))]


class Relu:
    """max(z, 0); derivative 1 where out > 0, else 0."""

    name = "relu"

    @staticmethod
    def forward_ops(z):
        # np.maximum takes its output by keyword only
        return [(partial(np.maximum, out=z), (z, ZERO))]

    @staticmethod
    def slope_ops(out, slope):
        return [(np.greater, (out, ZERO, slope))]

    @staticmethod
    def backward_ops(grad, out, slope):
        return [(np.multiply, (grad, slope, grad))]


class Softmax:
    """exp(z - max z) / sum(exp(z - max z)) along each row; an output only, trained with cross-entropy.

    Paired with cross-entropy, delta = y - softmax (see the module docstring): no slope, no
    backward operation. Subtracting the row maximum first keeps exp from overflowing.
    """

    name = "softmax"

    @staticmethod
    def forward_ops(z):
        # per-row max, then per-row sum, over the last axis (rows may be stacked: runner/nn/stacked.py)
        column = np.empty((*z.shape[:-1], 1))  # allocated once, here
        return [(np.maximum.reduce, (z, -1, None, column, True)), (np.subtract, (z, column, z)),
                (np.exp, (z, z)), (np.add.reduce, (z, -1, None, column, True)), (np.divide, (z, column, z))]

    @staticmethod
    def slope_ops(out, slope):
        return []

    @staticmethod
    def backward_ops(grad, out, slope):
        return []


ACTIVATIONS = {cls.name: cls for cls in (Sigmoid, Tanh, Relu)}  # for hidden layers
OUTPUTS = {cls.name: cls for cls in (Sigmoid, Softmax)}  # for the output layer, each with its loss (above)


def _lookup(table, name, what):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(table)}") from None


def get_activation(name):
    """The hidden-layer activation called `name`; ValueError lists the known ones."""
    return _lookup(ACTIVATIONS, name, "activation")


def get_output(name):
    """The output activation called `name` (it implies the loss); ValueError lists the known ones."""
    return _lookup(OUTPUTS, name, "output")


def run_ops(ops):
    """Execute a list of `(ufunc, args)` operations in order."""
    for func, args in ops:
        func(*args)
