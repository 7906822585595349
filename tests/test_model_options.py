"""Model and training options against independent oracles: outputs, init schemes, mini-batches, scores, divergence."""

import numpy as np
import pytest
from oracles import backprop_update, forward, loss, numerical_gradient
from seed_program import X as SEED_X
from seed_program import Y as SEED_Y

from runner.nn import metrics, training
from runner.nn.network import INITS, init_weights, layer_sizes
from runner.nn.training import DivergenceError, shuffle_rng, train

HIDDEN = ["sigmoid", "tanh", "relu"]
OUTPUTS = ["sigmoid", "softmax"]


def classification_data(rows=6, features=3, classes=3, seed=7):
    """Random inputs and one-hot targets."""
    rng = np.random.RandomState(seed)
    return rng.random_sample((rows, features)), np.eye(classes)[rng.randint(0, classes, rows)]


def blobs(per_class, spread, seed=0):
    """Three Gaussian classes around fixed centres, with a bias column."""
    rng = np.random.RandomState(seed)
    centres = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    labels = np.repeat(np.arange(3), per_class)
    X = np.hstack([centres[labels] + rng.standard_normal((len(labels), 2)) * spread, np.ones((len(labels), 1))])
    return X, np.eye(3)[labels]


def noisy_labels(rows=40, classes=3):
    """Random labels: no network fits them, so a softmax error never vanishes and a large lr blows up."""
    rng = np.random.RandomState(0)
    X = np.hstack([rng.standard_normal((rows, 4)), np.ones((rows, 1))])
    return X, np.eye(classes)[rng.randint(0, classes, rows)]


def assert_step_follows(before, after, gradient, lr):
    for b, a, g in zip(before, after, gradient):
        assert np.allclose(a - b, -lr * g, rtol=1e-5, atol=1e-8)


# --- outputs and their losses ---

@pytest.mark.parametrize("hidden", [[4], [5, 3]])
@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("output", OUTPUTS)
def test_one_step_follows_the_numerical_gradient_of_the_outputs_loss(hidden, activation, output):
    X, y = classification_data()
    weights = init_weights(layer_sizes(3, hidden, 3), np.random.RandomState(3))
    lr = 0.3
    numeric = numerical_gradient(lambda ws: loss(ws, X, y, activation, output), [w.copy() for w in weights])
    stepped = train(weights, X, y, iterations=1, log_every=1, lr=lr, hidden_activation=activation,
                    output_activation=output).weights
    assert_step_follows(weights, stepped, numeric, lr)


@pytest.mark.parametrize("activation", HIDDEN)
def test_softmax_forward_matches_the_oracle_and_survives_large_inputs(activation):
    X, y = classification_data(rows=8)
    weights = init_weights(layer_sizes(3, [6], 3), np.random.RandomState(1))
    result = train(weights, X, y, iterations=1, log_every=1, hidden_activation=activation, output_activation="softmax")
    assert np.allclose(result.last_output, forward(weights, X, activation, "softmax")[-1], rtol=1e-12)
    assert np.allclose(result.last_output.sum(axis=1), 1.0, rtol=1e-14)
    # z in the thousands overflows a textbook exp (inf / inf = nan); the row maximum is subtracted first
    big = [w * 400 for w in weights]
    out = train(big, X, y, iterations=1, log_every=1, hidden_activation="tanh", output_activation="softmax",
                lr=1e-9).last_output
    assert np.abs(big[1]).max() > 100
    assert np.isfinite(out).all() and np.allclose(out.sum(axis=1), 1.0)


def test_softmax_learns_three_separable_classes():
    X, y = blobs(per_class=20, spread=0.5)
    weights = init_weights(layer_sizes(3, [8], 3), np.random.RandomState(1), "xavier")
    result = train(weights, X, y, iterations=300, log_every=100, lr=0.01, hidden_activation="tanh",
                   output_activation="softmax", classify=True)
    assert result.history[0].train_accuracy < 0.9
    assert result.final.train_accuracy == 1.0
    assert result.errors == sorted(result.errors, reverse=True)


# --- initialisation ---

def test_xavier_is_glorot_uniform():
    fan_in, fan_out = 400, 300
    (w,) = init_weights([fan_in, fan_out], np.random.RandomState(5), "xavier")
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.999 * limit
    assert w.var() == pytest.approx(2 / (fan_in + fan_out), rel=0.02)  # U(-l, l) has variance l**2 / 3
    assert abs(w.mean()) < 4 * w.std() / np.sqrt(w.size)


def test_he_is_normal_with_variance_two_over_fan_in():
    fan_in, fan_out = 400, 300
    (w,) = init_weights([fan_in, fan_out], np.random.RandomState(5), "he")
    assert w.std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.02)
    assert abs(w.mean()) < 4 * w.std() / np.sqrt(w.size)
    # normal, not uniform: about 4.6% of draws lie beyond 2 standard deviations (uniform has none)
    assert np.mean(np.abs(w) > 2 * np.sqrt(2 / fan_in)) == pytest.approx(0.0455, abs=0.005)


def test_each_layer_gets_its_own_scale():
    sizes = [1000, 10, 500]
    xavier = init_weights(sizes, np.random.RandomState(2), "xavier")
    he = init_weights(sizes, np.random.RandomState(2), "he")
    assert [w.shape for w in xavier] == [(1000, 10), (10, 500)]
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        assert xavier[k].var() == pytest.approx(2 / (a + b), rel=0.1)
        assert he[k].var() == pytest.approx(2 / a, rel=0.1)


@pytest.mark.parametrize("scheme", sorted(INITS))
def test_init_is_deterministic_and_uses_only_its_own_rng(scheme):
    np.random.seed(123)
    expected = np.random.random_sample()
    np.random.seed(123)
    a = init_weights([3, 6, 2], np.random.RandomState(9), scheme)
    b = init_weights([3, 6, 2], np.random.RandomState(9), scheme)
    assert np.random.random_sample() == expected  # the global RNG was not touched
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    c = init_weights([3, 6, 2], np.random.RandomState(10), scheme)
    assert not np.array_equal(a[0], c[0])


# --- mini-batches ---

def documented_batches(seed, rows, batch_size, epochs):
    """Row indices per iteration as the README states: arange(rows), shuffled in place by shuffle_rng(seed)
    at each epoch's start, cut into batches of batch_size (the last one shorter)."""
    rng, order = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]), np.arange(rows)
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, rows, batch_size):
            yield order[start:start + batch_size].copy()


@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("output", OUTPUTS)
def test_each_mini_batch_step_follows_the_numerical_gradient_of_its_batch(activation, output):
    X, y = classification_data(rows=10)
    batches = list(documented_batches(5, 10, 4, 2))  # sizes 4, 4, 2 in each epoch
    initial = init_weights(layer_sizes(3, [5], 3), np.random.RandomState(3))
    lr = 0.2

    def after(iterations):
        if iterations == 0:
            return initial
        return train(initial, X, y, iterations=iterations, log_every=100, lr=lr, hidden_activation=activation,
                     output_activation=output, batch_size=4, rng=shuffle_rng(5)).weights

    for i in (0, 2, 3):  # an epoch's first batch, its short last batch, the first batch of the next epoch
        before, rows = after(i), batches[i]
        numeric = numerical_gradient(lambda ws: loss(ws, X[rows], y[rows], activation, output),
                                     [w.copy() for w in before])
        assert_step_follows(before, after(i + 1), numeric, lr)


def test_every_row_is_used_once_per_epoch():
    batches = list(documented_batches(5, 10, 4, 3))
    for epoch in range(3):
        assert sorted(np.concatenate(batches[3 * epoch:3 * epoch + 3])) == list(range(10))
    assert not np.array_equal(batches[0], batches[3])  # reshuffled


def test_shuffling_is_reproducible_from_the_seed_and_leaves_global_rng_alone():
    X, y = classification_data(rows=12)
    initial = init_weights(layer_sizes(3, [4], 3), np.random.RandomState(1))

    def run(seed):
        return train(initial, X, y, iterations=20, log_every=10, lr=0.5, batch_size=5, rng=shuffle_rng(seed)).weights

    np.random.seed(42)
    expected = np.random.random_sample()
    np.random.seed(42)
    a, b, c = run(8), run(8), run(9)
    assert np.random.random_sample() == expected
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_batch_of_all_rows_is_the_full_batch_bit_for_bit():
    initial = init_weights([3, 4, 1], np.random.RandomState(1))
    full = train(initial, SEED_X, SEED_Y, iterations=500, log_every=100)
    same = train(initial, SEED_X, SEED_Y, iterations=500, log_every=100, batch_size=4, rng=shuffle_rng(1))
    assert all(np.array_equal(p, q) for p, q in zip(full.weights, same.weights))
    assert full.errors == same.errors


def test_mini_batch_training_allocates_nothing_per_iteration():
    import tracemalloc

    X, y = classification_data(rows=64, features=8)
    initial = init_weights(layer_sizes(8, [32], 3), np.random.RandomState(1))

    def peak(iterations):
        tracemalloc.start()
        train(initial, X, y, iterations=iterations, log_every=10**6, batch_size=16, rng=shuffle_rng(1))
        used = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return used

    # 40x the iterations (160 epochs): the peak stays what the buffers need
    assert peak(4000) < peak(100) * 1.1


# --- scores ---

def test_predicted_classes_threshold_a_single_output_and_argmax_several():
    assert list(metrics.predicted_classes(np.array([[0.2], [0.7], [0.5], [0.5000001]]))) == [0, 1, 0, 1]
    assert list(metrics.predicted_classes(np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]))) == [1, 0]
    assert metrics.accuracy(np.array([[0.0], [1.0], [1.0]]), np.array([[0.2], [0.7], [0.5]])) == 2 / 3


def plain_scores(weights, X, y, activation, output):
    """error and accuracy from the oracle's forward pass, written out plainly."""
    out = forward(weights, X, activation, output)[-1]
    if y.shape[1] == 1:
        right = (out[:, 0] > 0.5) == (y[:, 0] > 0.5)
    else:
        right = out.argmax(axis=1) == y.argmax(axis=1)
    return np.mean(np.abs(y - out)), np.mean(right)


@pytest.mark.parametrize("output, classes", [("softmax", 3), ("sigmoid", 3), ("sigmoid", 1)])
@pytest.mark.parametrize("batch_size", [0, 5])
def test_logged_scores_match_a_plain_computation(monkeypatch, output, classes, batch_size):
    monkeypatch.setattr(training, "EVAL_ROWS", 3)  # measure in chunks of 3, 3, 1 rows
    X, y = classification_data(rows=20, classes=max(classes, 2), seed=11)
    Xt, yt = classification_data(rows=7, classes=max(classes, 2), seed=12)
    if classes == 1:
        y, yt = y[:, :1], yt[:, :1]
    initial = init_weights(layer_sizes(3, [6], classes), np.random.RandomState(4))
    logged = []
    result = train(initial, X, y, iterations=30, log_every=10, lr=0.3, hidden_activation="tanh",
                   output_activation=output, batch_size=batch_size, rng=shuffle_rng(3), X_test=Xt, y_test=yt,
                   classify=True, on_log=lambda step, scores: logged.append((step, scores)))
    assert [step for step, _ in logged] == result.steps == [0, 10, 20, 30]
    for step, scores in logged:
        weights = initial if step == 0 else train(initial, X, y, iterations=step, log_every=100, lr=0.3,
                                                  hidden_activation="tanh", output_activation=output,
                                                  batch_size=batch_size, rng=shuffle_rng(3)).weights
        error, train_accuracy = plain_scores(weights, X, y, "tanh", output)
        test_error, test_accuracy = plain_scores(weights, Xt, yt, "tanh", output)
        assert scores.error == pytest.approx(error, abs=1e-14)
        assert scores.test_error == pytest.approx(test_error, abs=1e-14)
        assert scores.train_accuracy == train_accuracy and scores.test_accuracy == test_accuracy
    assert result.final == logged[-1][1]


def test_no_test_split_and_no_classification_give_no_such_scores():
    result = train(init_weights([3, 4, 1], np.random.RandomState(1)), SEED_X, SEED_Y, iterations=5, log_every=5)
    assert all(s.test_error is None and s.train_accuracy is None and s.test_accuracy is None for s in result.history)


# --- divergence ---

def test_divergence_names_the_step_and_the_layer_of_the_first_bad_update():
    """relu, lr 1e200 on the seed table: the second update overflows the output layer only."""
    initial = init_weights([3, 8, 8, 1], np.random.RandomState(1))
    options = dict(log_every=1000, lr=1e200, hidden_activation="relu")
    with pytest.raises(DivergenceError) as raised:
        train(initial, SEED_X, SEED_Y, iterations=1000, **options)
    step = raised.value.step
    good = train(initial, SEED_X, SEED_Y, iterations=step, **options).weights
    assert all(np.isfinite(w).all() for w in good)
    with np.errstate(all="ignore"):
        bad = backprop_update(good, SEED_X, SEED_Y, "relu", "sigmoid", lr=1e200)  # the oracle's next update
    assert raised.value.layers == [k for k, w in enumerate(bad) if not np.isfinite(w).all()] == [2]
    assert raised.value.kind == ("nan" if np.isnan(bad[2]).any() else "inf")
    assert str(raised.value).startswith(f"training diverged at step {step}: its update made the weights of layer 2 ")


@pytest.mark.parametrize("batch_size", [0, 7])
def test_divergence_step_does_not_depend_on_how_often_weights_are_checked(monkeypatch, batch_size):
    """Checking rarely replays from the last good check; the step found is the one an every-iteration check finds."""
    X, y = noisy_labels()
    initial = init_weights(layer_sizes(5, [8], 3), np.random.RandomState(1), "he")
    found = []
    for check_rows in (1, 10**9):  # every iteration; only at the logged steps (every 50)
        monkeypatch.setattr(training, "CHECK_ROWS", check_rows)
        logged = []
        with np.errstate(all="ignore"), pytest.raises(DivergenceError) as raised:
            train(initial, X, y, iterations=3000, log_every=50, lr=10.0, hidden_activation="relu",
                  output_activation="softmax", batch_size=batch_size, rng=shuffle_rng(1),
                  on_log=lambda step, scores: logged.append(scores))
        found.append((raised.value.step, raised.value.layers))
        assert all(np.isfinite(s.error) for s in logged)  # no NaN point was recorded before stopping
        assert len(logged) == raised.value.step // 50 + 1
    assert found[0] == found[1]
    step = found[0][0]
    assert step > 50 and step % 50  # diverges between logged steps, after a few checks
    with np.errstate(all="ignore"):
        before = train(initial, X, y, iterations=step, log_every=5000, lr=10.0, hidden_activation="relu",
                       output_activation="softmax", batch_size=batch_size, rng=shuffle_rng(1)).weights
    assert all(np.isfinite(w).all() for w in before)
