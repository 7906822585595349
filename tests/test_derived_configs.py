"""Derived sweep configs (hydra_plugins/nn_runner_batched_launcher/derived_configs.py) against Hydra's own
composition as the oracle: every derived config must be the config Hydra composes for the same job,
node for node (values, types, flags) and in the `.hydra/` files a batched sweep writes.
"""

import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from test_sweeps import TINY, nn_run_m

from hydra_plugins.nn_runner_batched_launcher.derived_configs import DerivedConfigs
from runner.config import CONFIG_DIR


@contextmanager
def multirun(*args):
    """(config loader, master config, job overrides) of `nn-run -m ARGS`, split into jobs as Hydra's basic sweeper does."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", list(args), run_mode=RunMode.MULTIRUN)
        params = [f"{key}={value}" for key, value in (master.hydra.sweeper.params or {}).items()]
        parsed = OverridesParser.create().parse_overrides([*params, *master.hydra.overrides.task])
        (jobs,) = BasicSweeper.split_arguments(parsed, None)
        yield loader, master, jobs


def counting(compose):
    """`compose` that counts its calls in `.calls`."""
    def counted(**kwargs):
        counted.calls += 1
        return compose(**kwargs)

    counted.calls = 0
    return counted


def nodes(cfg, path=""):
    """Every node of a config, unresolved: {path: (node type, metadata other than the resolver cache, value)}."""
    meta = cfg._metadata
    found = {path: (type(cfg).__name__, meta.ref_type, meta.object_type, meta.optional, meta.key, meta.flags,
                    meta.flags_root, None if isinstance(cfg, (DictConfig, ListConfig)) else cfg._value())}
    if isinstance(cfg, DictConfig) and not (cfg._is_none() or cfg._is_missing() or cfg._is_interpolation()):
        for key in cfg.keys():
            found.update(nodes(cfg._get_node(key), f"{path}.{key}"))
    if isinstance(cfg, ListConfig) and not (cfg._is_none() or cfg._is_missing() or cfg._is_interpolation()):
        for index in range(len(cfg)):
            found.update(nodes(cfg._get_node(index), f"{path}[{index}]"))
    return found


def assert_same_config(derived, composed):
    assert OmegaConf.to_container(derived, resolve=False) == OmegaConf.to_container(composed, resolve=False)
    assert OmegaConf.to_yaml(derived) == OmegaConf.to_yaml(composed)
    assert nodes(derived) == nodes(composed)
    for flag in ("struct", "readonly"):
        assert derived._get_node_flag(flag) == composed._get_node_flag(flag)
        assert derived.hydra._get_node_flag(flag) == composed.hydra._get_node_flag(flag)
    assert derived._metadata.resolver_cache == composed._metadata.resolver_cache


SWEEPS = {  # command line -> how many jobs Hydra must still compose (one per shape)
    ("seed=1,2,3",): 1,
    ("train.lr=0.1,0.5,2.5",): 1,
    ("train.lr=1,2,3",): 1,  # ints into the float key
    ("train.lr=1,0.5,2",): 1,  # an int, then floats
    ("seed=1,2", "train.lr=0.5,1"): 1,
    ("experiment=lr_sweep", "seed=1,2"): 1,  # the preset's hydra.sweeper.params sweep train.lr
    ("experiment=seed_robustness",): 1,
    ("dataset=iris,xor", "seed=1,2,3"): 2,  # a group choice: one composition per data set
    ("dataset=iris", "seed=1,2,3", "model.activation=tanh,relu", "train.iterations=10"): 1,
    ("seed=1,2", "tracking.experiment=run_${seed}"): 1,  # the sweeper resolves it: run_1 in both jobs
    ("seed=1,2", "train.lr=0.5,1", "hydra.job.config.override_dirname.kv_sep=_",
     "hydra.job.config.override_dirname.item_sep=+", "hydra.job.config.override_dirname.exclude_keys=[seed]"): 1,
    ("seed=1,2", "+extra=3", "model.hidden=[3,2]"): 1,  # an added key and a list value, the same in every job
    ("model.hidden=[3],[5]", "seed=1,2"): 2,  # list values differ: composed
}


@pytest.mark.parametrize("args, compositions", SWEEPS.items(), ids=[" ".join(a) for a in SWEEPS])
def test_derived_configs_are_the_configs_hydra_composes(args, compositions, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # naming the sweep's folder makes it (runner/output_folders.py)
    with multirun(*args) as (loader, master, jobs):
        compose = counting(loader.load_sweep_config)
        derived_configs = DerivedConfigs(loader, compose)
        sweep_dir = master.hydra.sweep.dir  # named into the master's cache before any job, as a sweep's callback does
        derived = [derived_configs.load_sweep_config(master, job) for job in jobs]
        time.sleep(1.1)  # a fresh ${now:} would differ now; the resolver cache keeps the sweep's
        assert len(jobs) >= 2 and compose.calls == compositions
        for job, cfg in zip(jobs, derived):
            composed = loader.load_sweep_config(master, job)
            assert_same_config(cfg, composed)
            assert list(cfg.hydra.overrides.task) == job
            assert cfg.hydra.sweep.dir == sweep_dir


def test_an_interpolation_of_a_derived_value_resolves_to_the_jobs_value():
    jobs = [[f"seed={seed}", "tracking.experiment=run_${seed}"] for seed in (1, 2, 3)]
    with multirun("seed=1,2") as (loader, master, _):
        compose = counting(loader.load_sweep_config)
        derived_configs = DerivedConfigs(loader, compose)
        derived = [derived_configs.load_sweep_config(master, job) for job in jobs]
        assert compose.calls == 1
        assert [cfg.tracking.experiment for cfg in derived] == ["run_1", "run_2", "run_3"]
        for job, cfg in zip(jobs, derived):
            assert_same_config(cfg, loader.load_sweep_config(master, job))


def test_a_value_hydra_rejects_fails_with_hydras_own_error():
    with multirun("seed=1,abc") as (loader, master, jobs):
        derived_configs = DerivedConfigs(loader, loader.load_sweep_config)
        assert derived_configs.load_sweep_config(master, jobs[0]).seed == 1
        with pytest.raises(ConfigCompositionException) as derived_error:
            derived_configs.load_sweep_config(master, jobs[1])
        with pytest.raises(ConfigCompositionException) as composed_error:
            loader.load_sweep_config(master, jobs[1])
        assert str(derived_error.value) == str(composed_error.value)
        assert repr(derived_error.value.__cause__) == repr(composed_error.value.__cause__)


@pytest.mark.parametrize("first, second", [
    (["seed=1", "seed=5"], ["seed=2", "seed=5"]),  # the same key twice: the last one wins
    (["seed=1", "seed=1"], ["seed=2", "seed=2"]),
    (["train.lr=1", "train={lr:3}"], ["train.lr=2", "train={lr:3}"]),  # a key inside another: the dict wins
    (["train.lr=1", "+train.extra=2"], ["train.lr=2", "+train.extra=2"]),  # added keys: composed
    (["train.lr=0.5"], ["train.lr=${seed}"]),  # an interpolation: composed
    (["train.lr=0.5"], ["train.lr=null"]),
    (["dataset.name=xor"], ["dataset.name=iris"]),
])
def test_jobs_that_may_differ_in_more_than_values_are_composed_by_hydra(first, second):
    with multirun("seed=1,2") as (loader, master, _):
        compose = counting(loader.load_sweep_config)
        derived_configs = DerivedConfigs(loader, compose)
        outcomes = []
        for job in (first, second):
            try:
                outcomes.append(derived_configs.load_sweep_config(master, job))
            except ConfigCompositionException as error:
                outcomes.append(str(error))
        try:
            expected = loader.load_sweep_config(master, second)
        except ConfigCompositionException as error:
            assert outcomes[1] == str(error)
        else:
            assert_same_config(outcomes[1], expected)


def hydra_files(sweep_dir, job):
    return {name: (Path(sweep_dir) / str(job) / ".hydra" / name).read_text()
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}


def comparable_hydra_yaml(text, sweep_dir):
    """hydra.yaml without what legitimately differs between launchers: the launcher, its choice and the folders."""
    hydra = yaml.safe_load(text)["hydra"]
    assert hydra["sweep"]["dir"] == str(sweep_dir)
    assert hydra["runtime"]["output_dir"].startswith(str(sweep_dir))
    for node, key in [(hydra, "launcher"), (hydra["sweep"], "dir"), (hydra["runtime"], "output_dir"),
                      (hydra["runtime"]["choices"], "hydra/launcher")]:
        node.pop(key)
    hydra["overrides"]["hydra"] = [o for o in hydra["overrides"]["hydra"]
                                   if not o.startswith(("hydra/launcher=", "hydra.sweep.dir="))]
    return hydra


def test_a_batched_sweep_writes_the_hydra_files_of_the_basic_launcher(tmp_path, tracking_uri, experiment):
    args = ["seed=1,2,3", "train.lr=0.5,1", "dataset=xor,seed", *TINY]
    sweep_dirs = {launcher: tmp_path / launcher for launcher in ("basic", "batched")}
    for launcher, sweep_dir in sweep_dirs.items():
        done = nn_run_m(tmp_path, tracking_uri, experiment, f"hydra/launcher={launcher}",
                        f"hydra.sweep.dir={sweep_dir}", *args)
        assert done.returncode == 0, done.stderr
    assert "Training 6 networks together" in done.stdout
    for job in range(12):
        basic, batched = (hydra_files(sweep_dirs[launcher], job) for launcher in ("basic", "batched"))
        assert batched["config.yaml"] == basic["config.yaml"]
        assert batched["overrides.yaml"] == basic["overrides.yaml"]
        assert (comparable_hydra_yaml(batched["hydra.yaml"], sweep_dirs["batched"])
                == comparable_hydra_yaml(basic["hydra.yaml"], sweep_dirs["basic"]))


def test_a_config_pickle_cannot_take_is_copied_whole():
    """A submitit job's config can refer to a class Hydra loaded again (pickle cannot find it by name)."""
    from dataclasses import dataclass

    from hydra_plugins.nn_runner_batched_launcher.derived_configs import Pristine

    @dataclass
    class Local:  # defined in a function: pickle cannot find it by its name
        lr: float = 0.5
        layers: tuple = (4, 1)

    config = OmegaConf.create({"train": OmegaConf.structured(Local), "seed": 1})
    kept = Pristine(config)
    assert kept.pickled is None
    first, second = kept.copy(), kept.copy()
    assert nodes(first) == nodes(config)
    first.train.lr = 2.0
    assert second.train.lr == 0.5 and config.train.lr == 0.5  # each copy is its own
    assert nodes(second) == nodes(config)
    plain = OmegaConf.create({"seed": 1, "train": {"lr": 0.5}})
    assert Pristine(plain).pickled is not None and nodes(Pristine(plain).copy()) == nodes(plain)
