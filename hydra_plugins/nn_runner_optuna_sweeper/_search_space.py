"""The search space of an nn_optuna search, read from Hydra's override syntax as hydra-optuna-sweeper reads it.

`hydra.sweeper.params` (KEY: EXPRESSION) and the command line's overrides, each to an Optuna distribution or a
fixed override, as hydra-optuna-sweeper 1.3 maps them but to Optuna's current distributions:

| expression | distribution |
| --- | --- |
| `interval(a, b)` | FloatDistribution(a, b) |
| `int(interval(a, b))` | IntDistribution(a, b) |
| `tag(log, interval(a, b))` | FloatDistribution(a, b, log=True) |
| `tag(log, int(interval(a, b)))` | IntDistribution(a, b, log=True) |
| `range(a, b[, step])`, all integers | IntDistribution(a, b, step=step): b included, unlike the basic sweeper |
| `range(a, b[, step])`, a float among them | FloatDistribution(a, b, step=step) |
| `choice(x, y, ...)`, `x,y,...`, `sort(...)`, `shuffle(...)` | CategoricalDistribution([x, y, ...]) |
| any other value | fixed: the override as it was given |

A choice of lists or dicts (`choice([2],[4])`) has their text as its choices ("[2]"), as Hydra's sweeper has.
A shuffled range keeps the range's order (a sampler draws from it; a shuffled order would change a seeded
search from run to run). This module is private to the plugin (Hydra's plugin scan skips `_` modules, so Optuna
is imported only when a search runs).
"""

from dataclasses import dataclass, field

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from runner.sweep.optuna_settings import SAMPLER_KEY, SettingsError


@dataclass
class SearchSpace:
    """The distributions to sample, the fixed overrides, and the order of all their keys."""

    distributions: dict = field(default_factory=dict)  # {key as the override names it: Optuna distribution}
    fixed: dict = field(default_factory=dict)  # {key: the override's own text}, for the keys not sampled
    order: list = field(default_factory=list)  # the keys, in the order the overrides gave them

    def overrides(self, params):
        """A trial's job overrides: each key's sampled value from `params`, or its fixed override."""
        return [self.fixed[key] if key in self.fixed else f"{key}={value_text(params[key])}" for key in self.order]


def params_arguments(params):
    """`hydra.sweeper.params` ({key: expression}) as override arguments, as Hydra's sweepers read them."""
    return [f"{key}={value}" for key, value in (params or {}).items()]


def search_space(arguments):
    """The SearchSpace of `arguments` (params_arguments first, then the command line): a later override of a
    key replaces an earlier one (and takes its own place in the order), so the command line wins over
    `hydra.sweeper.params`."""
    space = SearchSpace()
    for text, override in zip(arguments, OverridesParser.create().parse_overrides(arguments)):
        key = override.get_key_element()
        plain = key.lstrip("+~")
        for earlier in [k for k in space.order if k.lstrip("+~") == plain]:
            space.order.remove(earlier)
            space.distributions.pop(earlier, None)
            space.fixed.pop(earlier, None)
        space.order.append(key)
        found = distribution(override, text)
        if found is None:
            space.fixed[key] = text
        else:
            space.distributions[key] = found
    return space


def distribution(override, text=None):
    """The Optuna distribution of a parsed override, or None for a fixed value; SettingsError names `text`."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    text = text or override.input_line
    try:
        if isinstance(value, IntervalSweep):
            log = "log" in value.tags
            _check_bounds(value.start, value.end, log=log)
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log)
            return FloatDistribution(value.start, value.end, log=log)
        if isinstance(value, RangeSweep):
            if value.shuffle:
                return CategoricalDistribution(_choices(override, ordered=True))
            _check_bounds(value.start, value.stop, step=value.step)
            if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
                return FloatDistribution(value.start, value.stop, step=value.step)
            return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
        if isinstance(value, ChoiceSweep):
            return CategoricalDistribution(_choices(override, ordered=False))
    except (ValueError, TypeError) as error:
        raise SettingsError(f"{text} is not allowed: {' '.join(str(error).split())}") from None
    raise SettingsError(f"{text} is not allowed: nn_optuna searches interval(), int(interval()), tag(log, ...), "
                        "range(), choice() and comma lists")


def _check_bounds(low, high, log=False, step=None):
    """ValueError in nn-run's words (Optuna's differ between versions) for bounds no distribution takes."""
    if low > high:
        raise ValueError(f"its lower bound {low} is above its upper bound {high}")
    if log and low <= 0:
        raise ValueError(f"tag(log, ...) needs a lower bound > 0, not {low}")
    if step is not None and step <= 0:
        raise ValueError(f"its step must be > 0, not {step}")


def _choices(override, ordered):
    """The choices of a choice sweep (or of a shuffled range, in the range's order), as Hydra's sweeper encodes them."""
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    return sorted(choices, reverse=override.value().step < 0) if ordered else choices


def value_text(value):
    """A sampled value as override text that Hydra's parser reads back as that one value.

    Floats print exactly (repr); a choice's text (`[2]`, `'x y'`) is kept; a string that Hydra would read
    otherwise (`a,b` is a sweep) is single-quoted.
    """
    if not isinstance(value, str):
        return repr(value)
    try:
        (parsed,) = OverridesParser.create().parse_overrides([f"k={value}"])
        if not parsed.is_sweep_override() and parsed.get_value_element_as_str() == value:
            return value
    except Exception:  # noqa: BLE001  Hydra's parse error: the text needs quoting
        pass
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def grid(space):
    """{key: values} for the grid sampler: every choice, every integer step, every float step (low and high
    included); SettingsError for a continuous interval, which has no grid."""
    values = {}
    for key, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            values[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif dist.step is not None:
            count = int(round((dist.high - dist.low) / dist.step))
            values[key] = [dist.low + i * dist.step for i in range(count + 1)]
        else:
            raise SettingsError(f"{key} is searched over a continuous interval, which {SAMPLER_KEY}.name=grid cannot "
                                "enumerate: use choice(...), range(...) or int(interval(...)) with the grid sampler")
    return values
