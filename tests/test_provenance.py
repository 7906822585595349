"""What every run records for a rerun: git state and diff, versions, BLAS, CPU, environment."""

import hashlib
import json
import os
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
import yaml
from conftest import compose_config

from runner.job import run_job
from runner.tracking import provenance, record


def git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    """A real git checkout with one committed file."""
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q")
    git(folder, "config", "user.email", "test@example.com")
    git(folder, "config", "user.name", "test")
    (folder / "code.py").write_text("lr = 1.0\n")
    git(folder, "add", "code.py")
    git(folder, "commit", "-q", "-m", "first")
    return folder


def test_clean_checkout_records_commit_and_no_diff(repo):
    facts = provenance.collect(repo)
    assert facts.tags["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert facts.tags["git_dirty"] == "false"
    assert facts.git_diff is None and "git_diff_sha256" not in facts.tags


def test_dirty_checkout_records_its_diff(repo):
    (repo / "code.py").write_text("lr = 0.5\n")
    (repo / "untracked.txt").write_text("not part of the code\n")
    facts = provenance.collect(repo)
    assert facts.tags["git_dirty"] == "true"
    assert "-lr = 1.0\n+lr = 0.5\n" in facts.git_diff and "untracked" not in facts.git_diff
    assert facts.git_diff == git(repo, "diff", "HEAD")
    assert facts.tags["git_diff_sha256"] == hashlib.sha256(facts.git_diff.encode()).hexdigest()


def test_outside_git_the_state_is_unknown(tmp_path):
    facts = provenance.collect(tmp_path)
    assert facts.tags["git_commit"] == "unknown" and facts.tags["git_dirty"] == "unknown"
    assert facts.git_diff is None


def test_the_ui_shows_the_commit_only_when_it_is_known():
    from runner.tracking.client import with_ui_tags

    assert with_ui_tags({"git_commit": "abc123"})["mlflow.source.git.commit"] == "abc123"
    assert "mlflow.source.git.commit" not in with_ui_tags({"git_commit": "unknown"})
    assert set(with_ui_tags(None)) == {"mlflow.user", "mlflow.source.name", "mlflow.source.type"}  # MLflow's context


def test_versions_of_python_and_every_project_package():
    tags = provenance.collect().tags
    assert tags["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert tags["numpy_version"] == np.__version__ and tags["pyyaml_version"] == yaml.__version__
    assert tags["nn_runner_version"] == version("nn-runner")
    # every declared dependency of the project, whatever pyproject lists
    for requirement in ("hydra-core", "mlflow", "hydra-joblib-launcher", "omegaconf", "threadpoolctl"):
        assert tags[f"{requirement.replace('-', '_')}_version"] == version(requirement)


def test_blas_cpu_and_platform_facts():
    from threadpoolctl import threadpool_info

    tags = provenance.collect().tags
    (blas, *_) = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert tags["blas_internal_api"] == blas["internal_api"]
    assert tags["blas_version"] == blas["version"] and tags["blas_num_threads"] == str(blas["num_threads"])
    assert tags["blas_library"] == os.path.basename(blas["filepath"])
    if "architecture" in blas:  # OpenBLAS and BLIS name their kernel (the "coretype")
        assert tags["blas_architecture"] == blas["architecture"]
    assert tags["numpy_simd_baseline"] != "" and tags["numpy_simd_found"] != ""
    assert tags["cpu_count"] == str(os.cpu_count())
    if os.path.exists("/proc/cpuinfo"):
        models = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        assert tags["cpu_model"] == (models[0] if models else tags["cpu_model"])


def test_result_changing_environment_variables_are_recorded():
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1", "NPY_DISABLE_CPU_FEATURES": "AVX512F",
           "HOME": "/root", "MY_OPENBLAS_NOTE": "x"}
    assert provenance.result_env(env) == {"env.NPY_DISABLE_CPU_FEATURES": "AVX512F", "env.OPENBLAS_CORETYPE": "Haswell",
                                          "env.OPENBLAS_NUM_THREADS": "1"}


def test_a_variable_named_like_a_secret_is_never_recorded():
    env = {"OMP_NUM_THREADS": "2", "OMP_ACCESS_TOKEN": "t0ken", "MKL_Password": "pw", "NPY_SECRET_KEY": "k",
           "MLFLOW_TRACKING_PASSWORD": "pw2", "OPENBLAS_TOKENIZER": "x"}
    assert provenance.result_env(env) == {"env.OMP_NUM_THREADS": "2"}
    facts = tags_in_fresh_process(OMP_API_TOKEN="s3cret-t0ken", MLFLOW_TRACKING_PASSWORD="s3cret-pw")
    assert not [k for k, v in facts.items() if "s3cret" in v or "TOKEN" in k.upper() or "PASSWORD" in k.upper()]


def tags_in_fresh_process(**env):
    script = "import json, numpy; from runner.tracking.provenance import collect; print(json.dumps(collect().tags))"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    done = subprocess.run([sys.executable, "-c", script], env={**environ, **env}, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def test_a_forced_openblas_kernel_is_recorded():
    if provenance.collect().tags.get("blas_internal_api") != "openblas" or os.uname().machine != "x86_64":
        pytest.skip("needs OpenBLAS on x86-64")
    detected = tags_in_fresh_process()
    forced = tags_in_fresh_process(OPENBLAS_CORETYPE="Prescott")  # the oldest x86-64 kernel: any CPU runs it
    assert "env.OPENBLAS_CORETYPE" not in detected and forced["env.OPENBLAS_CORETYPE"] == "Prescott"
    assert forced["blas_architecture"] != detected["blas_architecture"]


def test_a_run_from_a_dirty_checkout_logs_the_diff(repo, monkeypatch, tracking_uri, experiment, client, tmp_path):
    (repo / "code.py").write_text("lr = 0.25\n")
    monkeypatch.setattr(provenance, "SOURCE_DIR", repo)  # the run's code "comes from" this real checkout
    overrides = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", "train.iterations=5"]
    result = run_job(compose_config(*overrides), overrides, "dirty")
    tags = client.get_run(result.run_id).data.tags
    assert tags["git_commit"] == git(repo, "rev-parse", "HEAD").strip() and tags["git_dirty"] == "true"
    folder = client.download_artifacts(result.run_id, "", str(tmp_path / "artifacts"))
    diff = open(os.path.join(folder, record.GIT_DIFF_FILE), "rb").read()
    assert b"+lr = 0.25\n" in diff and diff == git(repo, "diff", "HEAD").encode()
    assert tags["git_diff_sha256"] == hashlib.sha256(diff).hexdigest()
    assert tags["blas_internal_api"] and tags["cpu_model"] and tags["numpy_simd_found"]


def test_a_run_from_a_clean_checkout_logs_no_diff(repo, monkeypatch, tracking_uri, experiment, client, tmp_path):
    monkeypatch.setattr(provenance, "SOURCE_DIR", repo)
    overrides = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", "train.iterations=5"]
    result = run_job(compose_config(*overrides), overrides, "clean")
    assert client.get_run(result.run_id).data.tags["git_dirty"] == "false"
    folder = client.download_artifacts(result.run_id, "", str(tmp_path / "artifacts"))
    assert not os.path.exists(os.path.join(folder, record.GIT_DIFF_FILE))
    assert os.path.exists(os.path.join(folder, record.CONFIG_FILE))
