"""A sweep config's strategy and members: what `config.search` asks for.

`config.sweep` gives the space (`space.points`: a grid, or random draws);
`config.search` the strategy: 'grid' and 'random' (`grid.GridSearch`),
'halving' (`halving.SuccessiveHalving` over the points), 'hyperband'
(`hyperband.Hyperband`, as many random draws as its brackets start), 'pbt'
(`pbt.PopulationBasedTraining`) or 'tpe' (`proposer.Proposer`: batches of
`tpe_batch` points asked from Optuna's TPE, each through halving's rungs).
Every setting is checked here, before anything is compiled or written.
"""

import ml_collections

from mlp import hparams
from mlp.errors import UserError
from mlp.search import budgets, space
from mlp.search.grid import GridSearch
from mlp.search.halving import SuccessiveHalving
from mlp.search.hyperband import Hyperband
from mlp.search.pbt import Explore, PopulationBasedTraining
from mlp.search.proposer import Proposer
from mlp.search.strategy import Strategy

ADAPTIVE = (
  'halving',
  'hyperband',
  'tpe',
)  # searches that train members for different steps


def strategy_and_members(
  config: ml_collections.ConfigDict,
  num_train: int,
  study: str | None = None,
  extra: tuple[hparams.Field, ...] = (),
) -> tuple[Strategy, list[ml_collections.ConfigDict]]:
  """The strategy `config.search` names and each member's training config.

  Args:
    config: a sweep config.
    num_train: the training split's size (an epoch's steps are evaluations'
      default interval, and so population-based training's).
    study: where a proposer keeps its Optuna study (a storage URL such as
      `sqlite:///WORKDIR/optuna.db`); `None`: in memory.
    extra: the model's own hyperparameters (`models.Model.hyperparams`).

  Raises:
    UserError: for a bad search setting or sweep value.
  """
  name = config.get('search', 'grid')
  if name in (*ADAPTIVE, 'pbt'):
    for field in hparams.SEARCH:
      field.check(config.get(field.name, field.default))
  if name == 'hyperband':
    _check_rungs(config)
    if config.get('num_samples', 0) != 0:
      raise UserError(
        f'config field num_samples={config.num_samples} is invalid with '
        'search=hyperband: its brackets set how many models are drawn (set it to 0)'
      )
    strategy = Hyperband(config.min_iters, _max_iters(config), config.eta)
    draws = ml_collections.ConfigDict(config.to_dict())
    draws.num_samples = strategy.num_members
    points = space.points(draws)
  else:
    if name in ADAPTIVE:
      _check_rungs(config)
    points = space.points(config)  # checked; a proposer asks its own
  if name == 'tpe':
    strategy = _proposer(config, num_train, study, extra)
    points = [{}] * strategy.num_samples  # its members start as the base config
  configs = [space.model_config(config, p) for p in points]
  if name in ADAPTIVE:
    for c in configs:  # the rungs stop a model; its schedule is the full run's
      c.num_iters = _max_iters(config)
  if name == 'halving':
    ends = budgets.rungs(config.min_iters, _max_iters(config), config.eta)
    sizes = budgets.rung_sizes(len(points), len(ends), config.eta)
    strategy = SuccessiveHalving([budgets.Bracket(ends, sizes)], config.eta)
  elif name == 'pbt':
    strategy = _pbt(config, points, configs, num_train)
  elif name in ('grid', 'random'):
    strategy = GridSearch(len(points), name)
  return strategy, configs


def _max_iters(config) -> int:
  return config.max_iters or config.num_iters


def _check_rungs(config) -> None:
  if config.min_iters > _max_iters(config):
    raise UserError(
      f'config field min_iters={config.min_iters} is invalid: expected at most '
      f'max_iters={_max_iters(config)} (set it with --config.min_iters=VALUE)'
    )
  if space.swept_values(config).get('num_iters'):
    raise UserError(
      f'config.sweep.num_iters cannot be swept with search={config.search}: the '
      "rungs set each model's steps (set --config.max_iters and --config.min_iters)"
    )


def _pbt(config, points: list[dict], configs: list, num_train: int):
  """Population-based training's strategy, its exploration checked."""
  swept = space.swept_values(config)
  for name in ('hidden_size', 'batch_size', 'num_iters'):
    if _several(swept.get(name, ())):
      raise UserError(
        f'config.sweep.{name} cannot take several values with search=pbt: its '
        'members copy each other, so they share shapes and training length'
      )
  floats = [f.name for f in hparams.PER_MODEL if f.dtype is float]
  names = tuple(config.get('pbt_explore', ())) or tuple(
    f for f in swept if f in floats and _several(swept[f])
  )
  for name in names:
    values = swept.get(name, ())
    if name not in floats or not _several(values) or space.bounds(values)[0] <= 0:
      raise UserError(
        f'config.pbt_explore names {name!r}: expected a per-model float field swept '
        f'over positive values ({", ".join(floats)}), whose range bounds the search'
      )
  if not names:
    raise UserError(
      'search=pbt needs a float field swept over a range to explore, e.g. '
      '--config.sweep.learning_rate="(\'log\', 0.01, 1.0)"'
    )
  explore = Explore(
    fields=names,
    low=tuple(float(space.bounds(swept[n])[0]) for n in names),
    high=tuple(float(space.bounds(swept[n])[1]) for n in names),
    perturb=float(config.pbt_perturb),
    resample=float(config.pbt_resample),
    fraction=float(config.pbt_fraction),
  )
  num_iters = configs[0].num_iters
  eval_every = configs[0].eval_every or max(num_train // configs[0].batch_size, 1)
  interval = config.pbt_interval or eval_every
  ends = [*range(interval, num_iters, interval), num_iters]
  return PopulationBasedTraining(points, ends, explore, config.seed)


def _proposer(config, num_train: int, study: str | None, extra: tuple):
  """The model-based proposer over the space, every bound of it checked."""
  spaces = space.swept_values(config)
  if not spaces:
    raise UserError(
      'search=tpe needs a swept field to propose, e.g. '
      '--config.sweep.learning_rate="(\'log\', 0.01, 1.0)"'
    )
  for field, field_space in spaces.items():  # the ends of ranges, every value
    for value in (
      space.bounds(field_space) if space.is_range(field_space) else field_space
    ):
      hparams.validate(
        space.model_config(config, {field: value}), num_train=num_train, extra=extra
      )
  return Proposer(
    spaces,
    num_samples=config.num_samples,
    batch=config.tpe_batch,
    ends=budgets.rungs(config.min_iters, _max_iters(config), config.eta),
    eta=config.eta,
    seed=config.seed,
    storage=study,
  )


def _several(field_space: tuple) -> bool:
  """Whether a field's space holds more than one value."""
  return space.is_range(field_space) or len(set(field_space)) > 1
