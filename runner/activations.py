"""Activation functions as lists of in-place NumPy operations on preallocated buffers.

An operation is a `(ufunc, args)` pair that the training loop calls as `ufunc(*args)`. The
derivative is split in two: `slope_ops` depends on the layer's output alone (so the training
loop can run it on every layer at once), `backward_ops` multiplies the incoming gradient by it.
The order of operations matches the seed program's expressions exactly: floating-point
multiplication is not associative and the default run must keep the seed's bits.
"""

from functools import partial

import numpy as np

# 0-d arrays instead of Python floats: same values and bits, half the per-call cost
ONE = np.array(1.0)
ZERO = np.array(0.0)


class Sigmoid:
    """1 / (1 + exp(-z)); derivative out * (1 - out), applied as (grad * out) * (1 - out)."""

    name = "sigmoid"

    @staticmethod
    def forward_ops(z):
        return [(np.negative, (z, z)), (np.exp, (z, z)), (np.add, (z, ONE, z)), (np.divide, (ONE, z, z))]

    @staticmethod
    def slope_ops(out, slope):
        return [(np.subtract, (ONE, out, slope))]

    @staticmethod
    def backward_ops(grad, out, slope):
        """The seed's `error * l * (1 - l)`: multiply by out first, then by 1 - out."""
        return [(np.multiply, (grad, out, grad)), (np.multiply, (grad, slope, grad))]


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


ACTIVATIONS = {cls.name: cls for cls in (Sigmoid, Tanh, Relu)}


def get_activation(name):
    """The activation called `name`; ValueError lists the known ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}") from None


def run_ops(ops):
    """Execute a list of `(ufunc, args)` operations in order."""
    for func, args in ops:
        func(*args)
