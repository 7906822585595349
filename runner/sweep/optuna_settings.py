"""The settings of nn-runner's Optuna sweeper (`hydra/sweeper=nn_optuna`): its study's storage and name, its
sampler and pruner, each checked with a one-line SettingsError naming the key, the value and what is allowed.

Shared by the sweeper (hydra_plugins/nn_runner_optuna_sweeper) and the jobs of a search, which find their
trial as: storage `storage_url(hydra_cfg.sweeper, hydra_cfg.sweep.dir)` (opened with `open_storage`), study
`study_name(hydra_cfg.sweeper, hydra_cfg.sweep.dir)`, trial number `hydra_cfg.job.num`. Optuna is imported
only by the functions that build its objects (~0.6 s): this module is imported by every job.
"""

import math
import os
from urllib.parse import urlsplit

from runner.tracking.uri import masked, redact

SWEEPER_TARGET = "hydra_plugins.nn_runner_optuna_sweeper.optuna_sweeper.NnOptunaSweeper"  # its config's _target_
SWEEPER_KEY, SAMPLER_KEY, PRUNER_KEY = "hydra.sweeper", "hydra.sweeper.sampler", "hydra.sweeper.pruner"
STORAGE_FILE = "optuna.db"  # storage null: this SQLite file in the sweep folder
SQLITE_TIMEOUT = 600.0  # seconds a job waits for SQLite's lock (parallel jobs) before 'database is locked'
DIRECTIONS = ("minimize", "maximize")
# hydra.sweeper.workers: the launchers that run a sweep's jobs at the same time, each a worker of the search
WORKER_LAUNCHERS = {
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": "submitit_local",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": "submitit_slurm",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": "joblib",
}

# name -> (Optuna's class in optuna.samplers, the settings it takes besides `name`); a null setting: Optuna's default
SAMPLERS = {
    "tpe": ("TPESampler", ("seed", "n_startup_trials", "n_ei_candidates", "multivariate", "group", "constant_liar")),
    "random": ("RandomSampler", ("seed",)),
    "grid": ("GridSampler", ("seed",)),
    "cmaes": ("CmaEsSampler", ("seed", "n_startup_trials", "popsize", "use_separable_cma", "with_margin", "lr_adapt",
                               "consider_pruned_trials")),
    "qmc": ("QMCSampler", ("seed", "qmc_type", "scramble")),
}
QMC_TYPES = ("sobol", "halton")
# the least value of an integer setting, checked before Optuna (some it checks only when sampling, or not at all)
LEAST = {"seed": 0, "n_startup_trials": 0, "n_ei_candidates": 1, "popsize": 1, "n_warmup_steps": 0,
         "interval_steps": 1, "n_min_trials": 1, "reduction_factor": 2, "min_early_stopping_rate": 0,
         "bootstrap_count": 0}
SEED_LIMIT = 2**32  # a seed is below it (NumPy's RandomState)
# name -> (Optuna's class in optuna.pruners, the settings it takes besides `name`)
PRUNERS = {
    "none": ("NopPruner", ()),
    "median": ("MedianPruner", ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials")),
    "percentile": ("PercentilePruner", ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps",
                                        "n_min_trials")),
    "successive_halving": ("SuccessiveHalvingPruner", ("min_resource", "reduction_factor", "min_early_stopping_rate",
                                                       "bootstrap_count")),
    "hyperband": ("HyperbandPruner", ("min_resource", "max_resource", "reduction_factor", "bootstrap_count")),
}


class SettingsError(ValueError):
    """A sweeper setting or search-space expression nn_optuna cannot use; the message is one line."""


def check_numbers(direction, n_trials, n_jobs, max_failure_rate):
    """SettingsError for a direction, trial count, batch size or failure rate out of range."""
    if direction not in DIRECTIONS:
        raise SettingsError(f"{SWEEPER_KEY}.direction={direction} is not allowed: must be one of {', '.join(DIRECTIONS)}")
    for key, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
        if value < 1:
            raise SettingsError(f"{SWEEPER_KEY}.{key}={value} is not allowed: must be >= 1")
    if not 0 <= max_failure_rate <= 1:
        raise SettingsError(f"{SWEEPER_KEY}.max_failure_rate={max_failure_rate} is not allowed: must be between 0 "
                            "and 1 (the most failed trials, as a fraction of n_trials, before the search stops)")


def check_workers(workers, launcher_target, launcher_choice):
    """SettingsError for a `workers` setting the search cannot use: not null, 0 or a positive count, or workers
    on a launcher that runs its jobs one after another (basic) or trains them together (batched)."""
    if workers is None or workers == 0:
        return
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise SettingsError(f"{SWEEPER_KEY}.workers={workers} is not allowed: must be null or 0 (batches of n_jobs) "
                            "or the number of worker jobs (>= 1)")
    if launcher_target not in WORKER_LAUNCHERS:
        raise SettingsError(f"{SWEEPER_KEY}.workers={workers} is not allowed with hydra/launcher={launcher_choice}: "
                            f"workers run as jobs at the same time, on {', '.join(WORKER_LAUNCHERS.values())}")


def check_storage(url):
    """SettingsError for a storage that is not an RDB URL, or that carries a password (secrets come from the
    environment, as the database's client reads them: Hydra would write the URL into the sweep's files)."""
    if "://" not in url:
        raise SettingsError(f"{SWEEPER_KEY}.storage={url} is not allowed: must be an Optuna RDB storage URL "
                            "(sqlite:///PATH, postgresql://HOST/DB, mysql://HOST/DB), or null for "
                            f"{STORAGE_FILE} in the sweep folder")
    if urlsplit(url).password is not None:
        raise SettingsError(f"{SWEEPER_KEY}.storage={masked(url)!r} is not allowed: a password in it would be "
                            "written into Hydra's files; give it as the database's client reads it (PostgreSQL: "
                            f"PGPASSWORD or ~/.pgpass), and use {SWEEPER_KEY}.storage={redact(url)!r}")


def storage_url(sweeper_cfg, sweep_dir, cwd=None):
    """The study's storage: `sweeper_cfg.storage`, or the SQLite file STORAGE_FILE in the sweep folder
    (a relative `sweep_dir` is taken from `cwd`, default the current directory: pass
    hydra_cfg.runtime.cwd in a job that may have changed directory)."""
    url = sweeper_cfg.get("storage")
    if url is None:
        return f"sqlite:///{os.path.abspath(os.path.join(cwd or os.getcwd(), str(sweep_dir), STORAGE_FILE))}"
    check_storage(url)
    return url


def study_name(sweeper_cfg, sweep_dir):
    """The study's name: `sweeper_cfg.study_name`, or else the sweep folder as hydra.sweep.dir names it."""
    return sweeper_cfg.get("study_name") or str(sweep_dir)


def open_storage(url):
    """Optuna's RDBStorage at `url`; on SQLite a process waits up to SQLITE_TIMEOUT s for another's write."""
    import optuna  # ~0.6 s (measured): only where an Optuna object is built, not in every job that imports this

    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def _given(settings, group, known):
    """The non-null settings besides `name`, refusing the ones the named sampler/pruner does not take."""
    name = settings.get("name")
    allowed = known[name][1]
    given = {key: value for key, value in settings.items() if key != "name" and value is not None}
    for key, value in given.items():
        if key not in allowed:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no settings"
            raise SettingsError(f"{group}.{key}={value} is not allowed with {group}.name={name}: {name} {takes}")
        if key in LEAST and isinstance(value, int) and value < LEAST[key]:
            raise SettingsError(f"{group}.{key}={value} is not allowed: must be >= {LEAST[key]}")
        if key == "seed" and isinstance(value, int) and value >= SEED_LIMIT:
            raise SettingsError(f"{group}.seed={value} is not allowed: must be below 2**32")
    return given


def _check_name(settings, group, known):
    name = settings.get("name")
    if name not in known:
        raise SettingsError(f"{group}.name={name} is not allowed: must be one of {', '.join(known)}")
    return name


def _build(cls, given, group, name):
    """cls(**given), with Optuna's refusal of a value as one SettingsError line naming the settings."""
    try:
        return cls(**given)
    except (ValueError, TypeError) as error:
        said = ", ".join(f"{group}.{key}={value}" for key, value in given.items()) or f"{group}.name={name}"
        raise SettingsError(f"{said} is not allowed: {' '.join(str(error).split())}") from None


def make_sampler(settings, grid=None):
    """The Optuna sampler `settings` name (a plain dict: `name` and its settings, null ones left to Optuna);
    the grid sampler takes its grid, {parameter: [values]}, from `grid` (the search space's)."""
    import optuna  # ~0.6 s (measured): only where an Optuna object is built, not in every job that imports this

    name = _check_name(settings, SAMPLER_KEY, SAMPLERS)
    given = _given(settings, SAMPLER_KEY, SAMPLERS)
    if name == "qmc" and given.get("qmc_type", "sobol") not in QMC_TYPES:
        raise SettingsError(f"{SAMPLER_KEY}.qmc_type={given['qmc_type']} is not allowed: must be one of "
                            f"{', '.join(QMC_TYPES)}")
    cls = getattr(optuna.samplers, SAMPLERS[name][0])
    if name == "grid":
        return _build(lambda **kw: cls(grid or {}, **kw), given, SAMPLER_KEY, name)
    return _build(cls, given, SAMPLER_KEY, name)


def make_pruner(settings):
    """The Optuna pruner `settings` name (a plain dict: `name` and its settings, null ones left to Optuna)."""
    import optuna  # ~0.6 s (measured): only where an Optuna object is built, not in every job that imports this

    name = _check_name(settings, PRUNER_KEY, PRUNERS)
    given = _given(settings, PRUNER_KEY, PRUNERS)
    if name == "percentile" and "percentile" not in given:
        raise SettingsError(f"{PRUNER_KEY}.percentile is missing: {PRUNER_KEY}.name=percentile prunes a trial "
                            "worse than this percentile (0-100) of the trials at the same step")
    if name == "percentile" and not (isinstance(given["percentile"], (int, float)) and math.isfinite(given["percentile"])):
        raise SettingsError(f"{PRUNER_KEY}.percentile={given['percentile']} is not allowed: must be a number 0-100")
    return _build(getattr(optuna.pruners, PRUNERS[name][0]), given, PRUNER_KEY, name)
