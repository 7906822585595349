"""The seed program as DEVELOPERS.md states it, transcribed plainly: the oracle for the default run."""

import numpy as np

X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
Y = np.array([[0], [1], [1], [0]])


def seed_program(iterations=60000, report_every=10000):
    """Run the seed loop; return (syn0, syn1, errors reported, last l2)."""
    state = np.random.get_state()
    np.random.seed(1)
    syn0 = 2 * np.random.random((3, 4)) - 1
    syn1 = 2 * np.random.random((4, 1)) - 1
    np.random.set_state(state)
    return seed_loop(X, Y, syn0, syn1, iterations, report_every)


def seed_loop(X, Y, syn0, syn1, iterations, report_every):
    """The seed's training loop on any table and any hidden width; updates syn0, syn1 in place."""
    errors, l2 = [], None
    for j in range(iterations):
        l0 = X
        l1 = 1 / (1 + np.exp(-np.dot(l0, syn0)))
        l2 = 1 / (1 + np.exp(-np.dot(l1, syn1)))
        l2_error = Y - l2
        if (j % report_every) == 0:
            errors.append(np.mean(np.abs(l2_error)))
        l2_delta = l2_error * l2 * (1 - l2)
        l1_delta = l2_delta.dot(syn1.T) * l1 * (1 - l1)
        syn1 += l1.T.dot(l2_delta)
        syn0 += l0.T.dot(l1_delta)
    return syn0, syn1, errors, l2
