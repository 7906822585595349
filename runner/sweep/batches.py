"""Which jobs of a sweep can train together, and training each such batch at once (runner/nn/stacked.py).

Jobs share a batch when their configs are equal in every key but `seed` and `train.lr`, and
they train full batch (`train.batch_size=0`): same data, shape, activations, init scheme,
iterations and logging steps. Any other difference, including keys this module does not know,
puts them in different batches. No Hydra launcher and no MLflow here: the batched launcher
(hydra_plugins/nn_runner_batched_launcher) composes the configs and logs the results.
"""

import json


from runner.config import ConfigError, check, task_values
from runner.job import Trained, initial_weights, prepare_job
from runner.nn.stacked import train_stacked
from runner.sweep.pruning import trial_reporter
from runner.tracking import provenance
from runner.tracking.uri import ServerRefused, ServerUnreachable

BATCH_FREE_KEYS = ("seed", "train.lr")  # what may differ between the networks of one batch


def batch_key(cfg):
    """A text equal for configs that can share a batch; None when this config trains alone (mini-batches, bad values).

    `cfg` is a job's config; its `hydra` node, if it has one, is left out (runner.config.task_values).
    """
    try:
        check(cfg)
    except ConfigError:
        return None  # it fails as a job of its own, with its own error
    if cfg.train.batch_size != 0:
        return None  # mini-batches shuffle per run: no stacked form here
    node = task_values(cfg)
    for key in BATCH_FREE_KEYS:
        *path, last = key.split(".")
        parent = node
        for part in path:
            parent = parent[part]
        parent.pop(last)
    return json.dumps(node, sort_keys=True)


def plan_batches(configs, max_batch):
    """Lists of indices into `configs` that train together, in order of first appearance; groups of one left out.

    A group larger than `max_batch` is cut into batches of at most that many networks.
    """
    return group_batches([batch_key(cfg) for cfg in configs], max_batch)


def group_batches(keys, max_batch):
    """plan_batches from the configs' batch keys (batch_key; None: the job trains alone)."""
    groups = {}
    for index, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(index)
    batches = []
    for members in groups.values():
        batches += [members[start:start + max_batch] for start in range(0, len(members), max_batch)]
    return [batch for batch in batches if len(batch) > 1]


def share_out(batches, count, workers):
    """Split jobs 0..count-1 (their `batches` from plan_batches) among `workers` processes.

    Each process gets a contiguous part of every batch, to train together, and a turn of the jobs
    that train alone. Returns [(batch parts, job indices in order)], one per process that has a job.
    """
    shares = [([], []) for _ in range(workers)]
    in_batches = set()
    for batch in batches:
        size = -(-len(batch) // workers)
        for worker, start in enumerate(range(0, len(batch), size)):
            shares[worker][0].append(batch[start:start + size])
            shares[worker][1].extend(batch[start:start + size])
        in_batches.update(batch)
    for turn, index in enumerate(i for i in range(count) if i not in in_batches):
        shares[turn % workers][1].append(index)
    return [(parts, sorted(jobs)) for parts, jobs in shares if jobs]


def train_batch(configs, stoppers=None):
    """Train the jobs `configs` (one batch of plan_batches) together.

    `stoppers` holds one should_stop(step, scores) or None per config (runner.job.run_job's; by default each
    job's trial reporter in a pruned search, runner/sweep/pruning.py, from its config's `hydra` node): a
    network whose should_stop says True at a logged step stops there and leaves the stack
    (runner/nn/stacked.py), and its Trained result says so (TrainResult.stopped_at); run_job logs it as a
    pruned run.
    Returns one runner.job.Trained per config, or None for a job to run on its own: every job
    when the shared data or tracking server is rejected (each then fails with its own error),
    and a network that diverged (alone, it fails with the step and layer of its first bad update).
    """
    first = configs[0]
    try:
        data = prepare_job(first)  # what prepare_job checks is the same for every job of the batch
    except (ConfigError, ServerUnreachable, ServerRefused):
        return [None] * len(configs)
    if stoppers is None:
        stoppers = [trial_reporter(cfg, cfg.hydra) if "hydra" in cfg else None for cfg in configs]
    results, diverged = train_stacked(
        [initial_weights(cfg, data) for cfg in configs], data.X, data.y, lrs=[cfg.train.lr for cfg in configs],
        iterations=first.train.iterations, log_every=first.train.log_every, hidden_activation=first.model.activation,
        output_activation=first.model.output, X_test=data.X_test, y_test=data.y_test, X_val=data.X_val,
        y_val=data.y_val, classify=data.classes is not None, on_logs=stoppers)
    for stopper in stoppers:
        if hasattr(stopper, "close"):  # a trial reporter of a network that diverged is still open
            stopper.close()
    facts, shared = provenance.collect(), {}
    return [None if n in diverged else Trained(result, data, facts, shared) for n, result in enumerate(results)]
