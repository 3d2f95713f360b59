"""The public search API: a search over a population of models, in one call.

  from mlp.search import api, space

  result = api.search(
    data=(train_x, train_y, val_x, val_y, test_x, test_y),
    space={'learning_rate': space.log_uniform(1e-3, 1.0), 'hidden_size': (64, 128)},
    strategy='hyperband', workdir='runs/mine', max_iters=900, min_iters=100,
  )
  result.table[0], result.best_params, result.members[3].history

`search` builds a sweep config from keyword settings (any field of
`configs/sweep.py`) and calls `run`, which is what `--mode=sweep` calls: the strategy of `config.search` over the
members of `config.sweep` (`from_config`), trained by the population driver
(`population`), then the workdir's files (`outputs`). It validates
everything before it creates the workdir, takes the workdir's lock, and
resumes from the workdir's checkpoint when it holds the same search.
"""

import dataclasses
import math
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from mlp import checkpoint, distributed, hparams, loop, model_axis, resources
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.data import Dataset
from mlp.errors import UserError
from mlp.progress import Progress
from mlp.search import from_config, outputs, population, space

STUDY = 'optuna.db'  # a proposer's Optuna study (SQLite)
OUTPUTS = (
  'results.csv',
  'results.md',
  f'{results_lib.PER_SEED}.csv',
  f'{results_lib.PER_SEED}.md',
  'curves.jsonl',
  'summary.json',
  'best_params.npz',
  STUDY,
)


@dataclasses.dataclass
class Result:
  """What a search leaves, besides its workdir's files.

  Attributes:
    table: the rows of `results.csv`, best first.
    best_params: the picked model's params (host arrays), or `None` if every
      model diverged.
    members: each member's result (`outputs.ModelResult`: its config, its
      evaluations, where it stopped, whom it copied), by member index.
    summary: `summary.json`'s contents.
    workdir: where the files are.
  """

  table: list[dict]
  best_params: dict | None
  members: list[outputs.ModelResult]
  summary: dict
  workdir: Path


def search(
  data: Dataset | tuple,
  space: dict,
  workdir: str | Path,
  strategy: str = 'grid',
  restart: bool = False,
  **settings,
) -> Result:
  """Searches `space` with `strategy` on `data`, into `workdir`.

  Args:
    data: a `Dataset`, or arrays `(train_x, train_y, val_x, val_y, test_x,
      test_y)`: inputs `(N, D)` (uint8 pixels are scaled to [0, 1]), integer
      labels `(N,)`.
    space: swept field -> its space (`mlp.search.space`: values, or a range).
    workdir: the output directory.
    strategy: 'grid', 'random', 'halving', 'hyperband' or 'pbt'.
    restart: delete a previous search's outputs in `workdir` first.
    **settings: any other field of `configs/sweep.py` (`num_iters`,
      `batch_size`, `num_samples`, `eta`, `min_iters`, `max_iters`, ...).

  Raises:
    UserError: for a bad setting or space, or data that does not fit.
  """
  from configs import sweep as sweep_config  # the fields and their defaults

  config = sweep_config.get_config()
  unknown = sorted(set(settings) - set(config) | set(space) - set(config.sweep))
  if unknown:
    raise UserError(
      f'unknown field(s) {", ".join(unknown)}: see configs/sweep.py and '
      'mlp/hparams.py for the fields a search takes'
    )
  config.update(
    settings, search=strategy, write_plots=settings.get('write_plots', False)
  )
  for field in config.sweep:  # the space replaces the course's
    config.sweep[field] = tuple(space.get(field, ()))
  dataset = data if isinstance(data, Dataset) else dataset_of(*data)
  return run(config, dataset, workdir, restart=restart)


def dataset_of(train_x, train_y, val_x, val_y, test_x, test_y) -> Dataset:
  """A `Dataset` of host arrays, checked: inputs `(N, D)`, labels `(N,)`."""
  splits = {
    'train': (train_x, train_y),
    'val': (val_x, val_y),
    'test': (test_x, test_y),
  }
  arrays = {}
  for name, (x, y) in splits.items():
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or not len(y):
      raise UserError(
        f'the {name} split has inputs of shape {x.shape} and labels of shape '
        f'{y.shape}: expected (N, D) inputs and (N,) labels, N > 0 the same'
      )
    arrays[name] = (x, y.astype(np.int32))
  side = int(round(math.sqrt(arrays['train'][0].shape[1])))
  return Dataset(
    *(a for pair in arrays.values() for a in pair),
    num_classes=int(max(y.max() for _, y in arrays.values())) + 1,
    image_shape=(side, side),
  )


def run(
  config: ml_collections.ConfigDict,
  dataset: Dataset,
  workdir: str | Path,
  restart: bool = False,
) -> Result:
  """Runs the search `config` describes on `dataset`, into `workdir`.

  Args:
    config: a sweep config (`configs/sweep.py`): the base training config,
      `sweep` (the space) and `search` with its settings.
    dataset: the data every member trains on.
    workdir: the output directory (created).
    restart: delete a previous search's outputs in `workdir` and start over.

  Raises:
    UserError: for a bad config, before anything is compiled or written.
  """
  # Process 0 keeps a proposer's study in the workdir, the others in memory.
  study = f'sqlite:///{Path(workdir).absolute() / STUDY}'
  strategy, configs = _checked(
    config, dataset, study if distributed.is_writer() else None
  )
  workdir = workdir_lib.prepare(workdir)
  with distributed.claim_workdir(workdir):
    return _search(config, workdir, restart, strategy, configs, dataset)


def _checked(config, dataset: Dataset, study: str | None):
  """The strategy and members, every config checked, and memory for them."""
  num_train, num_val = len(dataset.train_labels), len(dataset.val_labels)
  strategy, configs = from_config.strategy_and_members(config, num_train, study)
  for c in configs:
    hparams.validate(c, num_train=num_train)
  num_devices = jax.device_count()
  for key, static in population.statics(configs, dataset).items():
    resources.check(static, num_val, num_models=1)
    model_axis.models_per_chunk(config, static, num_val, num_devices)
    if strategy.name == 'pbt':  # the whole population is one program
      members = sum(population.shape_of(c) == key for c in configs)
      resources.check(
        static,
        num_val,
        math.ceil(members / num_devices),
        fix='lower the population (num_samples) or hidden_size',
      )
  return strategy, configs


def _search(config, workdir, restart, strategy, configs, dataset) -> Result:
  # 1. Resume or start: the checkpoint decides.
  resume_from = checkpoint.prepare_resume(workdir, config.to_dict(), restart, OUTPUTS)
  if distributed.is_writer():
    workdir_lib.write_json(workdir / 'config.json', config.to_dict())
  progress = Progress(1, unit='model-examples')
  trainer = loop.Trainer.of_run(workdir, config, progress)
  trainer.resume_from(resume_from)
  events = None
  if not strategy.columns:  # sessions declare every column when they start
    events = outputs.sweep_events(workdir, config, configs, resume_from is None)
  pop = population.Population(
    configs,
    dataset,
    _batched_fields(configs, strategy),
    trainer,
    models_per_chunk=lambda static: model_axis.models_per_chunk(
      config, static, len(dataset.val_labels), jax.device_count()
    ),
    on_evaluation=None if events is None else events.evaluation,
  )
  # 2. Run the strategy to its end.
  started = time.perf_counter()
  state, rounds, best = population.run(strategy, pop)
  members = outputs.members(rounds, configs, strategy)
  best_member, best_params = best.member, best.params
  swept = results_lib.columns(space.swept_values(config))
  chosen = results_lib.best_model(members, swept)
  # One seed: the driver's pick stands (an adaptive search's, among finishers).
  repeats = results_lib.has_repeats(members, swept)
  if chosen is not None and chosen.index != best.member and repeats:
    # Seeds are repeats: the best configuration (by its mean) is not the one
    # of the best single model, so train its best seed again.
    best_member, best_params = chosen.index, population.train_again(chosen.index, pop)
  progress.close()
  # 3. Write the tables, the summary, the plots and the report.
  summary = outputs.summary(
    len(configs),
    {
      **strategy.summary(state),
      'model_steps': sum(r.history['step'][-1] for r in members),
      'programs_compiled': len(pop.programs),
    },
    time.perf_counter() - started,
    pop.compile_seconds,
    pop.model_examples,
    pop.fields,
    resume_from is not None,
  )
  summary, table = outputs.write(
    config,
    workdir,
    dataset,
    members,
    (best_member, best_params),
    summary,
    strategy,
    events,
  )
  return Result(table, best_params, members, summary, workdir)


def _batched_fields(configs, strategy) -> tuple[str, ...]:
  """Fields that vary anywhere in the search: stacked in every chunk, so that
  the chunks of a shape group share one program."""
  varying = set(hparams.varying([hparams.of_config(c) for c in configs]))
  varying |= set(strategy.schedule) | set(strategy.proposes)
  return tuple(n for n in hparams.NAMES if n in varying)
