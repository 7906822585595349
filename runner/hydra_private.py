"""Every Hydra name this project uses that Hydra does not document as public, in one place.

Each is used only where no public API does the job; tests/test_private_names.py pins the
behaviour relied on, so a Hydra upgrade that changes one fails there, with the reason.
"""

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.utils import get_args_parser


def overrides_dirname(overrides, kv_sep, item_sep, exclude_keys):
    """hydra.job.override_dirname as Hydra computes it from parsed overrides (the batched launcher derives
    job configs without composing them: hydra_plugins/nn_runner_batched_launcher/derived_configs.py)."""
    return get_overrides_dirname(overrides=overrides, kv_sep=kv_sep, item_sep=item_sep, exclude_keys=exclude_keys)


def is_config_group(config_loader, name):
    """Whether `name` is a config group of the app (`dataset`, `hydra/launcher`): the config loader's repository."""
    return config_loader.repository.group_exists(name)


def job_error(job_return):
    """The exception a failed job raised, without raising it (JobReturn.return_value re-raises it)."""
    return getattr(job_return, "_return_value", None)


def command_line(argv):
    """The command line of a Hydra app as Hydra's own parser reads it (an argparse Namespace: .multirun, .cfg,
    .info, .run, .shell_completion, .resolve, .help, .overrides); Hydra checks their combinations only later."""
    return get_args_parser().parse_args(argv)
