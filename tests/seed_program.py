"""The seed program exactly as DEVELOPERS.md transcribes it: the oracle for the default run.

`nonlin` with its `deriv` flag, integer X and y, `np.random.seed(1)`, and the loop built the
way the transcript builds it, so `l2_delta = l2_error * nonlin(l2, deriv=True)` multiplies the
error by the slope `l2 * (1 - l2)` computed first. Run as a script it prints its results as
JSON (repr of every float), for the per-BLAS-kernel tests that run it in a subprocess.
"""

import json
import sys

import numpy as np

X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])  # integers; last column is a bias input
Y = np.array([[0], [1], [1], [0]])


def nonlin(x, deriv=False):
    if deriv:
        return x * (1 - x)
    return 1 / (1 + np.exp(-x))


def seed_program(iterations=60000, report_every=10000):
    """Run the seed program; return (syn0, syn1, errors printed, the l2 it prints). Restores NumPy's global RNG."""
    state = np.random.get_state()
    np.random.seed(1)
    syn0 = 2 * np.random.random((3, 4)) - 1
    syn1 = 2 * np.random.random((4, 1)) - 1
    np.random.set_state(state)
    return seed_loop(X, Y, syn0, syn1, iterations, report_every)


def seed_loop(X, y, syn0, syn1, iterations, report_every):
    """The seed's training loop, line for line, on any table and hidden width; updates syn0, syn1 in place."""
    errors, l2 = [], None
    for j in range(iterations):
        l0 = X
        l1 = nonlin(np.dot(l0, syn0))
        l2 = nonlin(np.dot(l1, syn1))
        l2_error = y - l2
        if j % report_every == 0:
            errors.append(np.mean(np.abs(l2_error)))
        l2_delta = l2_error * nonlin(l2, deriv=True)
        l1_error = l2_delta.dot(syn1.T)
        l1_delta = l1_error * nonlin(l1, deriv=True)
        syn1 += l1.T.dot(l2_delta)
        syn0 += l0.T.dot(l1_delta)
    return syn0, syn1, errors, l2


def as_json(syn0, syn1, errors, l2):
    """The results with every float as its repr, so a comparison across processes is exact."""
    def text(a):
        return [repr(float(v)) for v in np.asarray(a).ravel()]
    return json.dumps({"syn0": text(syn0), "syn1": text(syn1), "errors": text(errors), "l2": text(l2)})


if __name__ == "__main__":
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 60000
    print(as_json(*seed_program(iterations)))
