"""Comparing two runs' records: exact equality, the right part named, the largest difference."""

import numpy as np

from runner.tracking.record_diff import (
    MISSING,
    compare_metrics,
    compare_weights,
    differing_facts,
)


def weights():
    rng = np.random.RandomState(0)
    return [rng.random_sample((3, 4)), rng.random_sample((4, 1))]


def test_equal_weights_have_no_difference():
    assert compare_weights(weights(), weights()) == []


def test_a_changed_entry_names_its_matrix_and_the_largest_difference():
    source, rerun = weights(), weights()
    rerun[1][2, 0] += 1e-3
    rerun[1][3, 0] = np.nextafter(rerun[1][3, 0], 2.0)  # one ulp: still a difference
    (difference,) = compare_weights(source, rerun)
    assert difference.what == "weights/layer_1.npy"
    assert difference.detail == "2 of 4 entries differ"
    assert difference.largest == abs(rerun[1][2, 0] - source[1][2, 0])
    assert str(difference) == f"weights/layer_1.npy: 2 of 4 entries differ; largest absolute difference {difference.largest!r}"


def test_shape_and_count_mismatches_are_named():
    source = weights()
    differences = compare_weights(source, [source[0][:, :2]])
    assert [d.what for d in differences] == ["weights", "weights/layer_0.npy"]
    assert differences[0].detail == "2 matrices in the source, 1 in the rerun"
    assert differences[1].detail == "shape (3, 4) in the source, (3, 2) in the rerun"


def test_nan_in_the_same_place_is_equal():
    source, rerun = weights(), weights()
    source[0][0, 0] = rerun[0][0, 0] = np.nan
    assert compare_weights(source, rerun) == []


def test_equal_metric_histories_have_no_difference():
    history = {"error": [(0, 0.5), (10, 0.25), (20, 0.125)]}
    assert compare_metrics(history, {k: list(v) for k, v in history.items()}) == []


def test_a_changed_metric_point_gives_first_step_and_largest_difference():
    source = {"error": [(0, 0.5), (10, 0.25), (20, 0.125)], "accuracy": [(20, 1.0)]}
    next_up = float(np.nextafter(0.25, 1.0))  # one ulp away
    rerun = {"error": [(0, 0.5), (10, next_up), (20, 0.125 + 1e-3)], "accuracy": [(20, 1.0)]}
    (difference,) = compare_metrics(source, rerun)
    assert difference.what == "metric error"
    assert difference.detail == f"2 of 3 points differ, first at step 10 (0.25 vs {next_up!r})"
    assert difference.largest == abs(0.125 + 1e-3 - 0.125)


def test_missing_metrics_and_different_steps_are_named():
    source = {"error": [(0, 0.5), (10, 0.25)], "loss": [(0, 1.0)]}
    rerun = {"error": [(0, 0.5), (5, 0.3), (10, 0.25)]}
    differences = compare_metrics(source, rerun)
    assert [d.what for d in differences] == ["metric error", "metric loss"]
    assert differences[0].detail == "steps differ: source [0, 10] (2 points), rerun [0, 5, 10] (3 points)"
    assert differences[1].detail == "1 points in the source, none in the rerun"


def test_only_environment_facts_are_compared():
    source = {"blas_architecture": "Haswell", "env.OPENBLAS_CORETYPE": "Haswell", "numpy_version": "2.4.6",
              "git_commit": "abc", "weights_sha256": "1", "mlflow.runName": "a", "cpu_model": "X"}
    rerun = {"blas_architecture": "SkylakeX", "numpy_version": "2.4.6", "git_commit": "def",
             "weights_sha256": "2", "mlflow.runName": "b", "cpu_model": "X", "rerun_of": "r1"}
    assert differing_facts(source, rerun) == [
        ("blas_architecture", "Haswell", "SkylakeX"),
        ("env.OPENBLAS_CORETYPE", "Haswell", MISSING),
        ("git_commit", "abc", "def"),
    ]


def test_a_symlinked_interpreter_is_the_same_interpreter_but_another_venv_is_not(tmp_path):
    interpreter = tmp_path / "base" / "python3.11"
    interpreter.parent.mkdir()
    interpreter.write_text("")
    venvs = []
    for name in ("venv", "other-venv"):
        (tmp_path / name / "bin").mkdir(parents=True)
        (tmp_path / name / "pyvenv.cfg").write_text(f"home = {interpreter.parent}\n")
        (tmp_path / name / "bin" / "python").symlink_to(interpreter)
        (tmp_path / name / "bin" / "python3").symlink_to("python")
        venvs.append(tmp_path / name / "bin")
    venv, other = venvs
    facts = lambda path: {"python_executable": str(path), "python_version": "3.11.2"}  # noqa: E731
    assert differing_facts(facts(venv / "python3"), facts(venv / "python")) == []
    assert differing_facts(facts(venv / "python"), facts(venv / "python")) == []
    assert differing_facts(facts(venv / "python3"), facts(other / "python")) == [
        ("python_executable", str(venv / "python3"), str(other / "python"))]  # same file, other packages
    assert differing_facts(facts(interpreter), facts(venv / "python")) == [
        ("python_executable", str(interpreter), str(venv / "python"))]  # the base interpreter is not the venv
    missing = tmp_path / "gone" / "python"  # recorded on another machine
    assert differing_facts(facts(missing), facts(venv / "python")) == [
        ("python_executable", str(missing), str(venv / "python"))]
