"""nn-runner's Optuna sweeper: `nn-run -m hydra/sweeper=nn_optuna 'train.lr=tag(log, interval(0.01, 10))'`.

A Hydra sweeper on current Optuna (4.5 up to, not including, 6) with its non-deprecated APIs. It reads the
search space as hydra-optuna-sweeper does (_search_space.py) and runs the search (_search.py): a study in an
RDB storage (default: optuna.db in the sweep folder) that every job can open, `n_jobs` trials asked and launched
at a time with `hydra.job.num` equal to the trial's number, failed and pruned trials told as such, and
optimization_results.yaml in the sweep folder; the same search run again continues its study (docs/sweeps.md:
Resuming a search). With `workers: N` the launcher runs N worker jobs instead, each asking the shared study
for its next trial when it is free (_workers.py; docs/sweeps.md: Workers on a cluster). The sampler and pruner settings are checked by
runner/sweep/optuna_settings.py. This module imports no Optuna: Hydra imports it on every command.
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf


@dataclass
class SamplerConf:
    """hydra.sweeper.sampler: which Optuna sampler, and its settings; null: Optuna's default for that setting."""

    name: str = "tpe"  # tpe, random, grid (every point of a discrete space), cmaes or qmc
    seed: Optional[int] = None  # the sampler's own seed: the same trials on every run of a search (all samplers)
    n_startup_trials: Optional[int] = None  # tpe, cmaes: trials sampled at random before the model takes over
    n_ei_candidates: Optional[int] = None  # tpe: candidates drawn to pick each sample from
    multivariate: Optional[bool] = None  # tpe: model the parameters jointly
    group: Optional[bool] = None  # tpe (with multivariate): model each group of parameters that occur together
    constant_liar: Optional[bool] = None  # tpe: avoid sampling near trials still running (n_jobs > 1)
    popsize: Optional[int] = None  # cmaes: population size
    use_separable_cma: Optional[bool] = None  # cmaes: diagonal covariance (Optuna: experimental)
    with_margin: Optional[bool] = None  # cmaes: CMA-ES with margin, for integer parameters (Optuna: experimental)
    lr_adapt: Optional[bool] = None  # cmaes: learning-rate adaptation, for noisy objectives (Optuna: experimental)
    consider_pruned_trials: Optional[bool] = None  # cmaes: learn from pruned trials too (Optuna: experimental)
    qmc_type: Optional[str] = None  # qmc: sobol or halton
    scramble: Optional[bool] = None  # qmc: scramble the sequence (with seed)


@dataclass
class PrunerConf:
    """hydra.sweeper.pruner: which Optuna pruner stops hopeless trials early, and its settings (null: Optuna's)."""

    name: str = "none"  # none, median, percentile, successive_halving or hyperband
    n_startup_trials: Optional[int] = None  # median, percentile: trials that run to the end before any is pruned
    n_warmup_steps: Optional[int] = None  # median, percentile: steps of a trial before it can be pruned
    interval_steps: Optional[int] = None  # median, percentile: steps between two pruning checks
    n_min_trials: Optional[int] = None  # median, percentile: trials reported at a step before it can prune there
    percentile: Optional[float] = None  # percentile (needed): prune a trial worse than this percentile (0-100)
    min_resource: Any = None  # successive_halving ("auto" or steps), hyperband (steps): the least steps a trial gets
    max_resource: Any = None  # hyperband: "auto" or the most steps a trial gets
    reduction_factor: Optional[int] = None  # successive_halving, hyperband: 1 / the fraction of trials promoted
    min_early_stopping_rate: Optional[int] = None  # successive_halving: the first rung's early-stopping rate
    bootstrap_count: Optional[int] = None  # successive_halving, hyperband: trials a rung needs before promoting


@dataclass
class NnOptunaSweeperConf:
    """hydra/sweeper=nn_optuna; docs/sweeps.md (Search with Optuna) says more."""

    _target_: str = "hydra_plugins.nn_runner_optuna_sweeper.optuna_sweeper.NnOptunaSweeper"
    direction: str = "minimize"  # minimize or maximize what the task returns (nn-run: the final error)
    n_trials: int = 20  # trials in the whole search: a continued study's earlier trials count
    n_jobs: int = 1  # trials asked at once and launched as one batch (1: the sampler learns from every trial)
    workers: Optional[int] = None  # null/0: batches of n_jobs; N: N launcher jobs, each asking its next trial when free
    max_failure_rate: float = 0.0  # the search stops once more than this fraction of n_trials failed
    study_name: Optional[str] = None  # null: the sweep folder (hydra.sweep.dir); a study that exists is continued
    storage: Optional[str] = None  # an Optuna RDB URL (no password in it); null: sqlite optuna.db in the sweep folder
    sampler: SamplerConf = field(default_factory=SamplerConf)  # which sampler proposes the trials
    pruner: PrunerConf = field(default_factory=PrunerConf)  # which pruner stops trials early (jobs report to it)
    params: Optional[Dict[str, str]] = None  # the search space {key: expression}; the command line adds to it


ConfigStore.instance().store(group="hydra/sweeper", name="nn_optuna", node=NnOptunaSweeperConf,
                             provider="nn_runner_optuna_sweeper")


class NnOptunaSweeper(Sweeper):
    """Hydra sweeper: see the module docstring. The constructor only keeps the settings."""

    def __init__(self, direction, n_trials, n_jobs, max_failure_rate, study_name, storage, sampler, pruner, params,
                 workers=None):
        plain = (lambda node: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)
        self.settings = {"direction": direction, "n_trials": n_trials, "n_jobs": n_jobs,
                         "max_failure_rate": max_failure_rate, "study_name": study_name, "storage": storage,
                         "sampler": plain(sampler), "pruner": plain(pruner), "params": plain(params),
                         "workers": workers or 0}
        self.config = self.hydra_context = self.launcher = self.task_function = None

    @staticmethod
    def check_settings(config):
        """SettingsError (a ValueError, one line) for any setting or search-space expression of the composed
        `config` that the search cannot use. The sweep callback calls it before the parent run exists."""
        # _search imports Optuna (~0.6 s): Hydra imports this module on every command, a search or not
        from hydra_plugins.nn_runner_optuna_sweeper._search import prepare
        from runner.sweep.optuna_settings import check_workers, storage_url

        settings = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
        check_workers(settings.get("workers"), config.hydra.launcher.get("_target_"),
                      OmegaConf.select(config, "hydra.runtime.choices.hydra/launcher"))
        prepare(settings, list(config.hydra.overrides.task))
        storage_url(settings, config.hydra.sweep.dir)

    def setup(self, *, hydra_context, task_function, config):
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments):
        from hydra_plugins.nn_runner_optuna_sweeper._search import job_config, run_search  # Optuna, only for a search

        run_search(self.settings, arguments, self.config, self.launcher, validate=self.validate_batch_is_legal,
                   job_config=partial(job_config, self.hydra_context, self.config),
                   workers=self.launch_workers if self.settings["workers"] else None)

    def launch_workers(self, arguments, launch_id, held):
        """Launch the search's `workers` worker jobs (_workers.py) through the sweep's launcher, the study holding
        `held` trials; their JobReturns."""
        from hydra_plugins.nn_runner_optuna_sweeper._workers import WorkerLoop, worker_overrides

        loop = WorkerLoop(self.task_function, self.hydra_context, self.config, self.settings, list(arguments),
                          launch_id, held)
        launcher = Plugins.instance().instantiate_launcher(config=self.config, hydra_context=self.hydra_context,
                                                           task_function=loop)
        return launcher.launch(worker_overrides(self.settings["workers"]), initial_job_idx=0)
