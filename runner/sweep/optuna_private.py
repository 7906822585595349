"""Every Optuna name this project uses that Optuna does not document for its users, in one place.

A pruned search's job reports to a trial the sweeper asked in another process (runner/sweep/pruning.py):
Optuna builds a Trial for an existing trial only inside Study.optimize, and documents the Trial
constructor and the storage's id lookups as not meant for direct use. tests/test_private_names.py
pins what is relied on, so an Optuna upgrade that changes it fails there, with the reason.
"""

import optuna


def existing_trial(storage, name, number, pruner):
    """(optuna.trial.Trial of trial `number` of study `name` in `storage`, with `pruner` to ask, the steps it holds
    intermediate values for). Raises KeyError when the study has no such trial."""
    study = optuna.load_study(study_name=name, storage=storage, pruner=pruner,
                              sampler=optuna.samplers.RandomSampler())  # never asked: the sweeper samples
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
    trial = optuna.trial.Trial(study, trial_id)
    return trial, set(storage.get_trial(trial_id).intermediate_values)


def set_trial_attr(storage, name, number, key, value, system=False):
    """Set the user attribute `key` (a system attribute, one Optuna's users do not see in user_attrs, if
    `system`) of trial `number` (not finished) of study `name` in `storage`, without a Trial object (Trial's
    set_system_attr is deprecated; the storage's setters are not documented for direct use)."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
    (storage.set_trial_system_attr if system else storage.set_trial_user_attr)(trial_id, key, value)


def close_storage(storage):
    """Close an RDBStorage's database connections (its SQLAlchemy engine's pool)."""
    storage.remove_session()
    storage.engine.dispose()
