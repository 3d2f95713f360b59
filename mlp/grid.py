"""Hyperparameter grids: a config's `sweep` field -> a list of model configs.

`config.sweep` maps training-field names to tuples of values; an empty tuple
means "not swept, use the config's own value". With `search='grid'` the models
are the Cartesian product of the tuples; with `search='random'`, `num_samples`
points are drawn: a float field's `(low, high)` is a log-uniform range, an
integer field's tuple is a set of choices. `search='halving'` starts from
`num_samples` random points, or from the grid when `num_samples` is 0;
`search='hyperband'` from random points (as many as its brackets need);
`search='pbt'` trains the grid, or `num_samples` random points, as a population.
"""

import itertools
import math

import ml_collections
import numpy as np

from mlp import hparams
from mlp.errors import UserError

SEARCHES = ('grid', 'random', 'halving', 'hyperband', 'pbt')


def swept_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """The non-empty tuples of `config.sweep`, checked against `SWEEPABLE`."""
  if 'sweep' not in config:
    raise UserError(
      '--mode=sweep needs a config with a `sweep` field, e.g. --config=configs/sweep.py'
    )
  values = {}
  for field, value in config.sweep.items():
    if field not in hparams.SWEEPABLE:
      raise UserError(
        f'config.sweep.{field} cannot be swept: choose among '
        f'{", ".join(hparams.SWEEPABLE)}'
      )
    if not isinstance(value, tuple | list):
      raise UserError(
        f"config.sweep.{field}={value!r} must be a tuple, e.g. --config.sweep.{field}='(1, 2)'"
      )
    if value:
      values[field] = tuple(_number(field, v) for v in value)
      hparams.check_range(field, values[field])
  return values


def _number(field: str, value):
  """A sweep value as its field's type; refuses words and fractional integers."""
  integer = field in hparams.INTEGER
  number = isinstance(value, int | float) and not isinstance(value, bool)
  if not number or (integer and not float(value).is_integer()):
    kind = 'whole numbers' if integer else 'numbers'
    raise UserError(
      f'config.sweep.{field} holds {value!r}, but its values must be {kind}, e.g. '
      f"--config.sweep.{field}='{(16, 32) if integer else (0.1, 0.3)}'"
    )
  return int(value) if integer else float(value)


def _random_points(values: dict[str, tuple], num_samples: int, seed: int) -> list[dict]:
  rng = np.random.default_rng(seed)
  columns = {}
  for field, choices in values.items():
    if field in hparams.INTEGER:
      columns[field] = [int(x) for x in rng.choice(np.asarray(choices), num_samples)]
      continue
    if len(choices) != 2 or not 0 < choices[0] <= choices[1]:
      raise UserError(
        f'config.sweep.{field}={choices!r}: random search needs a (low, high) range of '
        'positive numbers, drawn log-uniformly'
      )
    low, high = math.log(choices[0]), math.log(choices[1])
    columns[field] = [float(x) for x in np.exp(rng.uniform(low, high, num_samples))]
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
  if search in ('random', 'hyperband') or (search != 'grid' and num_samples != 0):
    if (
      isinstance(num_samples, bool)
      or not isinstance(num_samples, int)
      or num_samples < 1
    ):
      raise UserError(
        f'config field num_samples={num_samples!r}: random search needs num_samples >= 1'
        + ('' if search == 'random' else ' (0: start from the grid)')
      )
    hparams.check_num_models(num_samples, 'lower --config.num_samples')
    result = _random_points(values, num_samples, config.seed)
  else:
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
    single[field] = int(value) if field in hparams.INTEGER else float(value)
  return single
