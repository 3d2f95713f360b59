"""The search space: what each swept field may take, spelled the same in config
files, on the command line and in the API.

`config.sweep` maps a training field's name to a tuple that says what it is:

- `(a, b, c)`: values. A grid takes their Cartesian product with the other
  fields'; random draws pick one of them uniformly.
- `('log', low, high)`: a float range, drawn log-uniformly (low > 0).
- `('linear', low, high)`: a float range, drawn uniformly.
- `('int', low, high)`: integers from low to high (both included), uniformly.

`values`, `log_uniform`, `uniform` and `integers` build them in Python. An
empty tuple means "not swept: the config's own value". A grid needs values;
random, halving, Hyperband and PBT draw from values or ranges (PBT explores a
field between its range's bounds, or its values' smallest and largest).
`search='grid'` gives the product; `'random'` `num_samples` draws;
`'halving'` and `'pbt'` start from `num_samples` draws, or from the grid when
`num_samples` is 0; `'hyperband'` from as many draws as its brackets start;
`'tpe'` asks `num_samples` points of the space from Optuna's TPE sampler
(`proposer`).

A model's own hyperparameters (`models.Model.hyperparams`) are swept the same
way: `with_extras` names them in the config (`config.extra_hyperparams`, each
field's name and type), so that every function here takes them too.
"""

import itertools
import math

import ml_collections
import numpy as np

from mlp import hparams
from mlp.errors import UserError

RANGES = ('log', 'linear', 'int')


def values(*choices) -> tuple:
  """A field's values: `values(0.1, 0.3)` is `(0.1, 0.3)`."""
  return tuple(choices)


def log_uniform(low: float, high: float) -> tuple:
  """A float range drawn log-uniformly: `('log', low, high)`."""
  return ('log', low, high)


def uniform(low: float, high: float) -> tuple:
  """A float range drawn uniformly: `('linear', low, high)`."""
  return ('linear', low, high)


def integers(low: int, high: int) -> tuple:
  """Integers from `low` to `high`, both included: `('int', low, high)`."""
  return ('int', low, high)


def is_range(space: tuple) -> bool:
  """Whether a field's parsed space is a range (else values)."""
  return bool(space) and space[0] in RANGES


def bounds(space: tuple) -> tuple[float, float]:
  """The smallest and largest value a field's space allows."""
  numbers = space[1:] if is_range(space) else space
  return min(numbers), max(numbers)


SEARCHES = ('grid', 'random', 'halving', 'hyperband', 'pbt', 'tpe')
EXTRAS = 'extra_hyperparams'  # the config field naming a model's own ones


def with_extras(
  config: ml_collections.ConfigDict, extra: tuple[hparams.Field, ...]
) -> ml_collections.ConfigDict:
  """`config` with a model's own hyperparameters declared: each one's type in
  `config.extra_hyperparams`, its default where the config has no value, and
  an empty space in `config.sweep` where it has none (a copy; `config` if
  there are none)."""
  if not extra:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config[EXTRAS] = {f.name: f.dtype.__name__ for f in extra}
  for f in extra:
    if f.name not in config:
      config[f.name] = f.default
    if 'sweep' in config and f.name not in config.sweep:
      config.sweep[f.name] = ()
  return config


def _sweepable(config) -> tuple[str, ...]:
  """The fields `config.sweep` may name: the table's and the model's own."""
  return hparams.SWEEPABLE + tuple(config.get(EXTRAS, {}))


def _integers(config) -> frozenset[str]:
  """The integer fields among `_sweepable(config)`."""
  extras = config.get(EXTRAS, {})
  return hparams.INTEGER | {n for n, dtype in extras.items() if dtype == 'int'}


def swept_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """The non-empty spaces of `config.sweep`, checked: values as their field's
  type, or a range `(kind, low, high)`."""
  if 'sweep' not in config:
    raise UserError(
      '--mode=sweep needs a config with a `sweep` field, e.g. --config=configs/sweep.py'
    )
  spaces, sweepable, integers = {}, _sweepable(config), _integers(config)
  for field, value in config.sweep.items():
    if field not in sweepable:
      raise UserError(
        f'config.sweep.{field} cannot be swept: choose among {", ".join(sweepable)}'
      )
    if not isinstance(value, tuple | list):
      raise UserError(
        f"config.sweep.{field}={value!r} must be a tuple, e.g. --config.sweep.{field}='(1, 2)'"
      )
    if value:
      spaces[field] = _space(field, tuple(value), field in integers)
      ends = spaces[field][1:] if is_range(spaces[field]) else spaces[field]
      hparams.check_range(field, ends)  # the field's own range, float32's, int32's
  return spaces


def _space(field: str, value: tuple, integer: bool) -> tuple:
  """One field's space, checked (see the module docstring)."""
  if value[0] not in RANGES:
    return tuple(_number(field, v, integer) for v in value)
  kind, *ends = value
  pair = len(ends) == 2
  low, high = (_number(field, v, integer) for v in ends) if pair else (1, 0)
  if (
    not pair
    or not low <= high
    or (kind == 'log' and low <= 0)
    or (kind == 'int') != integer
  ):
    example = "('int', 16, 128)" if integer else "('log', 0.001, 1.0)"
    kinds = "'int'" if integer else "'log' (low > 0) or 'linear'"
    raise UserError(
      f'config.sweep.{field}={value!r} is not a range of {field}: expected '
      f'(kind, low, high) with low <= high and kind {kinds}, e.g. '
      f'--config.sweep.{field}="{example}"'
    )
  return (kind, low, high)


def _number(field: str, value, integer: bool):
  """A sweep value as its field's type; refuses words and fractional integers."""
  number = isinstance(value, int | float) and not isinstance(value, bool)
  if not number or (integer and not float(value).is_integer()):
    kinds = 'whole numbers' if integer else 'numbers'
    example = ('int', 16, 128) if integer else ('log', 0.001, 1.0)
    raise UserError(
      f'config.sweep.{field} holds {value!r}, but its values must be {kinds} (or a '
      f'range such as {example}), e.g. --config.sweep.{field}='
      f"'{(16, 32) if integer else (0.1, 0.3)}'"
    )
  return int(value) if integer else float(value)


def _random_points(
  spaces: dict[str, tuple], num_samples: int, seed: int, integers: frozenset[str]
) -> list[dict]:
  """`num_samples` draws, field after field in the sweep's order (one
  generator from `seed`)."""
  rng = np.random.default_rng(seed)
  columns = {}
  for field, space in spaces.items():
    if not is_range(space):
      drawn = rng.choice(np.asarray(space), num_samples)
    elif space[0] == 'log':
      low, high = math.log(space[1]), math.log(space[2])
      drawn = np.exp(rng.uniform(low, high, num_samples))
    elif space[0] == 'linear':
      drawn = rng.uniform(space[1], space[2], num_samples)
    else:
      drawn = rng.integers(space[1], space[2] + 1, num_samples)
    cast = int if field in integers else float
    columns[field] = [cast(x) for x in drawn]
  return [{f: columns[f][i] for f in columns} for i in range(num_samples)]


def points(config: ml_collections.ConfigDict) -> list[dict]:
  """Each model's overrides of the base config, in grid order.

  Raises:
    UserError: for an unknown field, a bad value, or a bad search mode.
  """
  values = swept_values(config)
  chunk = config.get('models_per_chunk', 0)
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
    raise UserError(
      f'config field models_per_chunk={chunk!r} is invalid: expected an integer >= 0 '
      '(0 = as many models as fit in memory)'
    )
  search = config.get('search', 'grid')
  if search not in SEARCHES:
    raise UserError(
      f'config field search={search!r} is invalid: expected one of '
      f'{", ".join(SEARCHES)}'
    )
  num_samples = config.get('num_samples', 0)
  draws = ('random', 'hyperband', 'tpe')  # searches that never take the grid
  if search in draws or (search != 'grid' and num_samples != 0):
    if (
      isinstance(num_samples, bool)
      or not isinstance(num_samples, int)
      or num_samples < 1
    ):
      raise UserError(
        f'config field num_samples={num_samples!r}: search={search} needs num_samples >= 1'
        + ('' if search in draws else ' (0: start from the grid)')
      )
    hparams.check_num_models(num_samples, 'lower --config.num_samples')
    result = _random_points(values, num_samples, config.seed, _integers(config))
  else:
    ranges = [f for f, space in values.items() if is_range(space)]
    if ranges:
      raise UserError(
        f'config.sweep.{ranges[0]}={values[ranges[0]]!r} is a range, and a grid '
        'needs values: give values, or draw from it with --config.search=random '
        '(or halving, hyperband, pbt) and --config.num_samples=N'
      )
    hparams.check_num_models(
      math.prod(len(v) for v in values.values()), 'sweep fewer values'
    )
    fields = list(values)
    result = [
      dict(zip(fields, combo, strict=True))
      for combo in itertools.product(*values.values())
    ]
  base = config.to_dict()  # plain dicts: a ConfigDict per point is slow
  for point in result:
    hparams.validate({**base, **point})
  return result


def model_config(
  config: ml_collections.ConfigDict, point: dict
) -> ml_collections.ConfigDict:
  """The base config with one grid point's values (an unlocked copy)."""
  single = ml_collections.ConfigDict(config.to_dict())
  for field, value in point.items():
    single[field] = int(value) if field in _integers(config) else float(value)
  return single
