"""The training math against the seed program and against numerical gradients."""

import numpy as np
import pytest
from oracles import forward, numerical_gradient, squared_loss
from seed_program import X, Y, seed_program

from runner.nn.network import init_weights, layer_sizes, predict
from runner.nn.training import train


def test_init_weights_are_the_seed_programs():
    syn0, syn1, _, _ = seed_program(iterations=0)
    weights = init_weights(layer_sizes(3, [4], 1), np.random.RandomState(1))
    assert [w.shape for w in weights] == [(3, 4), (4, 1)]
    assert np.array_equal(weights[0], syn0) and np.array_equal(weights[1], syn1)


def test_init_weights_leave_global_rng_alone():
    np.random.seed(123)
    expected = np.random.random_sample()
    np.random.seed(123)
    init_weights([3, 4, 1], np.random.RandomState(1))
    assert np.random.random_sample() == expected


def test_default_training_reproduces_seed_program_bit_for_bit():
    syn0, syn1, seed_errors, seed_l2 = seed_program()
    result = train(init_weights([3, 4, 1], np.random.RandomState(1)), X, Y, iterations=60000, log_every=10000)
    assert np.array_equal(result.weights[0], syn0)
    assert np.array_equal(result.weights[1], syn1)
    assert result.steps == [0, 10000, 20000, 30000, 40000, 50000, 60000]
    assert result.errors[:-1] == [float(e) for e in seed_errors]  # exact, not approximate
    # the extra point is the error of the final weights
    assert result.errors[-1] == float(np.mean(np.abs(Y - predict(result.weights, X))))
    # the predictions are what the seed prints: its last forward pass, one update before the end
    assert np.array_equal(result.last_output, seed_l2)


def test_training_does_not_modify_the_initial_weights():
    initial = init_weights([3, 4, 1], np.random.RandomState(1))
    copies = [w.copy() for w in initial]
    train(initial, X, Y, iterations=10, log_every=5)
    assert all(np.array_equal(a, b) for a, b in zip(initial, copies))


@pytest.mark.parametrize("hidden", [[4], [5, 3], [6, 4, 3]])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("lr", [1.0, 0.1])
def test_one_step_follows_the_numerical_gradient(hidden, activation, lr):
    rng = np.random.RandomState(7)
    Xr, yr = rng.random_sample((5, 3)), rng.random_sample((5, 1))
    weights = init_weights(layer_sizes(3, hidden, 1), np.random.RandomState(3))
    numeric = numerical_gradient(lambda ws: squared_loss(ws, Xr, yr, activation), [w.copy() for w in weights])
    stepped = train(weights, Xr, yr, iterations=1, log_every=1, lr=lr, hidden_activation=activation).weights
    for before, after, g in zip(weights, stepped, numeric):
        assert np.allclose(after - before, -lr * g, rtol=1e-5, atol=1e-8)


def test_logged_errors_match_a_plain_forward_pass():
    weights = init_weights([3, 5, 2, 1], np.random.RandomState(4))
    result = train(weights, X, Y, iterations=7, log_every=3, lr=0.5)
    assert result.steps == [0, 3, 6, 7]
    assert result.errors[0] == pytest.approx(np.mean(np.abs(Y - forward(weights, X)[-1])), abs=1e-15)
    assert result.errors[-1] == pytest.approx(np.mean(np.abs(Y - forward(result.weights, X)[-1])), abs=1e-15)


def test_predict_matches_the_plain_forward_pass():
    weights = init_weights([3, 4, 4, 1], np.random.RandomState(2))
    for act in ("sigmoid", "tanh", "relu"):
        assert np.allclose(predict(weights, X, act), forward(weights, X, act)[-1], rtol=1e-12)
