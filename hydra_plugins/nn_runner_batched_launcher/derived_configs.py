"""A sweep job's config derived from an already composed job's config, when the two differ only in plain values.

Hydra composes every job of a sweep from scratch (defaults list, YAML files, schema merges: ~50-90 ms
a job here). Jobs whose overrides differ only in values such as `seed=2` or `train.lr=0.5` compose
to the same config up to those values, so `DerivedConfigs` composes the first job of each such
shape with Hydra and derives the others from it: a copy, the changed values applied as Hydra's
ConfigLoaderImpl._apply_overrides_to_config applies them, and the fields Hydra's
_load_configuration_impl/load_sweep_config compute from the overrides set as Hydra sets them
(hydra.overrides.task, hydra.job.override_dirname, hydra.runtime.cwd, hydra.job.env_set, the
resolver cache). Anything else, or any value that does not apply cleanly, is composed by Hydra.
"""

import copy
import os
import pickle

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType, ValueType
from omegaconf import OmegaConf, ValueNode, open_dict

from runner.hydra_private import is_config_group, overrides_dirname
from runner.omegaconf_private import node_at

SCALARS = (bool, int, float, str, type(None))
PARSED_LINES = 1024  # most override lines whose parse is kept: a seed sweep's `seed=N` lines are each new


class DerivedConfigs:
    """`load_sweep_config(master_config, sweep_overrides)` as Hydra's config loader has it, deriving where it safely can."""

    def __init__(self, config_loader, compose):
        """`compose` is the config loader's own load_sweep_config."""
        self.loader, self.compose = config_loader, compose
        self.parser = OverridesParser.create()
        self.templates = {}  # shape of the overrides -> (master config, parsed overrides, Pristine composed config)
        self.parsed = {}  # override text -> Override, the PARSED_LINES last used: the same lines recur in every job

    def load_sweep_config(self, master_config, sweep_overrides):
        overrides = [*OmegaConf.to_container(master_config.hydra.overrides.hydra), *sweep_overrides]
        try:
            parsed = [self._parse(line) for line in overrides]
        except Exception:
            return self.compose(master_config=master_config, sweep_overrides=sweep_overrides)  # Hydra's own error
        shape = (id(master_config), tuple(self._shape(override) for override in parsed))
        template = self.templates.get(shape)
        if template is not None and template[0] is master_config:
            derived = self._derive(template, parsed)
            if derived is not None:
                return derived
        composed = self.compose(master_config=master_config, sweep_overrides=sweep_overrides)
        if template is None or template[0] is not master_config:
            self.templates[shape] = (master_config, parsed, Pristine(composed))
        return composed

    def _parse(self, line):
        parsed = self.parsed.pop(line, None)  # put back last: the least recently used line goes first
        if parsed is None:
            if len(self.parsed) >= PARSED_LINES:
                del self.parsed[next(iter(self.parsed))]
            parsed = self.parser.parse_override(line)
        self.parsed[line] = parsed
        return parsed

    def _shape(self, override):
        """What two jobs' overrides must share for one's config to derive from the other's: a value's key, else all."""
        if _plain(override) and not is_config_group(self.loader, override.key_or_group):
            return "value", override.key_or_group
        return "as is", override.input_line

    def _derive(self, template, parsed):
        """The config for `parsed` from a template of the same shape; None where Hydra must compose it."""
        master_config, template_parsed, pristine = template
        cfg = pristine.copy()
        changed = [n for n, (old, new) in enumerate(zip(template_parsed, parsed)) if old.input_line != new.input_line]
        choices = cfg.hydra.runtime.choices
        for n in changed:
            key = parsed[n].key_or_group
            if (key in choices or not isinstance(node_at(cfg, key), ValueNode)
                    or any(_overlap(key, other.key_or_group) for m, other in enumerate(parsed) if m != n)):
                return None
        try:
            for n in changed:  # as ConfigLoaderImpl._apply_overrides_to_config applies a plain override
                OmegaConf.update(cfg, parsed[n].key_or_group, parsed[n].value(), merge=True)
        except Exception:
            return None  # Hydra composes it and raises its own error
        app_overrides = [override for override in parsed if not override.is_hydra_override()]
        task = cfg.hydra.overrides.task
        for position, override in enumerate(app_overrides):
            if task[position] != override.input_line:
                task[position] = override.input_line
        names = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = overrides_dirname(app_overrides, names.kv_sep, names.item_sep, names.exclude_keys)
        with open_dict(cfg.hydra):
            for key in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[key] = os.environ[key]
        cfg.hydra.runtime.cwd = os.getcwd()
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg


class Pristine:
    """A config kept as it was, handing out full copies of it.

    Pickled when it can be: unpickling is the cheapest full copy of a config, 2-3x faster than
    copy.deepcopy (benchmarks/sweep_configs.py). A config that refers to a class pickle cannot find
    by its name (a submitit job unpickles the sweep's config, then Hydra loads its plugin modules
    again, so BatchedLauncherConf is another class) is copied with deepcopy.
    """

    def __init__(self, config):
        try:
            self.pickled, self.config = pickle.dumps(config), None
        except Exception:  # noqa: BLE001  pickle.PicklingError, or an object pickle cannot take
            self.pickled, self.config = None, copy.deepcopy(config)

    def copy(self):
        return pickle.loads(self.pickled) if self.pickled is not None else copy.deepcopy(self.config)


def _plain(override):
    """Whether Hydra applies `override` as nothing but a scalar value set on an existing key (`key=value`)."""
    value = override.value() if override.value_type == ValueType.ELEMENT else None
    return (override.type == OverrideType.CHANGE and override.value_type == ValueType.ELEMENT
            and override.package is None and not override.key_or_group.startswith("hydra")
            and isinstance(value, SCALARS)
            and not (isinstance(value, str) and ("${" in value or value == "???")))  # interpolation, missing


def _overlap(key, other):
    """Whether setting one key can touch the other (same key, or one inside the other)."""
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")
