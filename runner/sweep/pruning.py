"""Pruning in nn-runner's Optuna search (`hydra/sweeper=nn_optuna` with a pruner): a job reports its objective to
its trial at every logged step and stops when the trial's pruner says so.

trial_reporter gives runner.job.run_job its `should_stop` (nn-run's task, runner/cli/run.py, and the batched
launcher's training, runner/sweep/batches.py): it finds the job's trial in the study's storage
(runner/sweep/optuna_settings.py: storage, study name; the trial number is hydra.job.num), calls
trial.report(value, step) and trial.should_prune() at each logged step, and on a prune sets the trial's user
attribute `pruned_at_step` (record.PRUNED_AT_TAG), from which the sweeper tells Optuna the trial was PRUNED.
The steps are training iterations: a pruner's n_warmup_steps, interval_steps or min_resource count them.
At the last step (train.iterations) the value is reported and the pruner not asked: the run is complete.
Optuna is imported when a job first reports (~0.6 s), so a run that does not prune never pays for it.
"""

from hydra.types import RunMode
from omegaconf import OmegaConf

from runner import objective
from runner.sweep.optuna_settings import SWEEPER_TARGET, make_pruner, open_storage, storage_url, study_name
from runner.tracking.record import PRUNED_AT_TAG


def reported_value(cfg, scores):
    """The figure a job reports to its trial at a logged step: its objective's value in `scores` (a
    runner.nn.metrics.Scores), the metric sweep.objective names (runner/objective.py: val_error with a
    validation split, else error)."""
    return float(objective.value(scores, objective.configured(cfg)))


def trial_reporter(cfg, hydra_cfg):
    """run_job's `should_stop` for the job `cfg` (its HydraConfig `hydra_cfg`, or a composed job config's `hydra`
    node): a TrialReporter when the job is a trial of nn-runner's Optuna sweeper with a pruner, else None."""
    sweeper = hydra_cfg.get("sweeper") or {}
    pruner = OmegaConf.to_container(sweeper.get("pruner") or OmegaConf.create({}), resolve=True)
    if (hydra_cfg.get("mode") != RunMode.MULTIRUN or sweeper.get("_target_") != SWEEPER_TARGET
            or pruner.get("name", "none") == "none"):
        return None
    url = storage_url(sweeper, hydra_cfg.sweep.dir, cwd=hydra_cfg.runtime.cwd)
    return TrialReporter(cfg, url, study_name(sweeper, hydra_cfg.sweep.dir), hydra_cfg.job.num, pruner)


class TrialReporter:
    """should_stop(step, scores) of one trial: report the objective, ask the pruner (module docstring).

    The study is opened at the first step and closed at the last, or when the trial is pruned: no
    database connection outlives the job's training (a batched launcher forks workers from this process).
    """

    def __init__(self, cfg, url, name, number, pruner_settings):
        self.cfg, self.url, self.name, self.number = cfg, url, name, number
        self.pruner_settings, self.last_step = pruner_settings, cfg.train.iterations
        self.trial = self.storage = None
        self.reported = set()  # steps the trial holds a value for (a resumed run takes its checkpoint's step again)

    def _open(self):
        # runner.sweep.optuna_private imports Optuna (~0.6 s): only once a trial reports
        from runner.sweep import optuna_private

        self.storage = open_storage(self.url)
        self.trial, self.reported = optuna_private.existing_trial(self.storage, self.name, self.number,
                                                                  make_pruner(self.pruner_settings))

    def close(self):
        """Close the study's database connections (opened again if the trial reports once more)."""
        if self.storage is not None:
            # runner.sweep.optuna_private is loaded already: _open imported it
            from runner.sweep import optuna_private

            optuna_private.close_storage(self.storage)
            self.trial = self.storage = None

    def __call__(self, step, scores):
        if self.trial is None:
            self._open()
        if step not in self.reported:
            self.trial.report(reported_value(self.cfg, scores), step)
            self.reported.add(step)
        if step >= self.last_step:
            self.close()
            return False
        if not self.trial.should_prune():
            return False
        self.trial.set_user_attr(PRUNED_AT_TAG, step)
        self.close()
        return True
