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

`train` is one model alone, what `--mode=train` calls (`single.run`): the
same engine and model functions as a search's members, with the train
workdir's files (`params.npz`, `metrics.jsonl`, a checkpoint per evaluation).
Every entry takes `model=` (`models.Model`; the MLP by default).
"""

import dataclasses
import math
import time
from pathlib import Path

import jax
import ml_collections

from mlp import (
  checkpoint,
  distributed,
  hparams,
  interrupt,
  loop,
  model_axis,
  models,
  resources,
)
from mlp import data as data_lib
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.data import Dataset
from mlp.errors import UserError
from mlp.progress import Progress
from mlp.search import from_config, outputs, population, single
from mlp.search import space as space_lib

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


# One model trained alone (`--mode=train`): a config, its data, a workdir.
train = single.run


def search(
  data: Dataset | tuple,
  space: dict,
  workdir: str | Path,
  strategy: str = 'grid',
  restart: bool = False,
  model: models.Model = models.MLP,
  **settings,
) -> Result:
  """Searches `space` with `strategy` for `model` on `data`, into `workdir`.

  Args:
    data: a `Dataset`, or arrays `(train_x, train_y, val_x, val_y, test_x,
      test_y)`: inputs `(N, ...)` (uint8 pixels are scaled to [0, 1], floats
      go in as they are), integer labels `(N,)` (`data.from_arrays`).
    space: swept field -> its space (`mlp.search.space`: values, or a range);
      the fields of `hparams.SWEEPABLE` and the model's own hyperparameters.
    workdir: the output directory.
    strategy: 'grid', 'random', 'halving', 'hyperband' or 'pbt'.
    restart: delete a previous search's outputs in `workdir` first.
    model: the model every member is (`models.Model`; default the MLP).
    **settings: any other field of `configs/sweep.py` (`num_iters`,
      `batch_size`, `hidden_size`, `optimizer`, `num_samples`, `eta`,
      `min_iters`, `max_iters`, ...), or a fixed value of one of the model's
      own hyperparameters.

  Raises:
    UserError: for a bad setting, space, model or data, before anything is
      compiled or written.
  """
  from configs import sweep as sweep_config  # the fields and their defaults

  config = space_lib.with_extras(sweep_config.get_config(), model.hyperparams)
  unknown = sorted(set(settings) - set(config) | set(space) - set(config.sweep))
  if unknown:
    raise UserError(
      f'unknown field(s) {", ".join(unknown)}: see configs/sweep.py and '
      'mlp/hparams.py for the fields a search takes'
    )
  config.update(settings, search=strategy)
  config.write_plots = settings.get('write_plots', False)
  for field in config.sweep:
    config.sweep[field] = tuple(space.get(field, ()))
  if not isinstance(data, Dataset):
    if len(data) != 6:
      raise UserError(
        'data must be a Dataset or six arrays (train_x, train_y, val_x, val_y, '
        f'test_x, test_y), got {len(data)}'
      )
    data = data_lib.from_arrays(tuple(data[0:2]), tuple(data[2:4]), tuple(data[4:6]))
  return run(config, data, workdir, restart=restart, model=model)


def run(
  config: ml_collections.ConfigDict,
  dataset: Dataset,
  workdir: str | Path,
  restart: bool = False,
  model: models.Model = models.MLP,
) -> Result:
  """Runs the search `config` describes on `dataset`, into `workdir`.

  Args:
    config: a sweep config (`configs/sweep.py`): the base training config,
      `sweep` (the space) and `search` with its settings.
    dataset: the data every member trains on.
    workdir: the output directory (created).
    restart: delete a previous search's outputs in `workdir` and start over.
    model: the model every member is (`models.Model`; default the MLP).

  Raises:
    UserError: for a bad config or model, before anything is compiled or
      written.
  """
  config = space_lib.with_extras(config, model.hyperparams)
  # Process 0 keeps a proposer's study in the workdir, the others in memory.
  study = f'sqlite:///{Path(workdir).absolute() / STUDY}'
  strategy, configs = _checked(
    config, dataset, model, study if distributed.is_writer() else None
  )
  workdir = workdir_lib.prepare(workdir)
  with distributed.claim_workdir(workdir):
    return _search(config, workdir, restart, strategy, configs, dataset, model)


def _checked(config, dataset: Dataset, model: models.Model, study: str | None):
  """The strategy and members, every config checked, the model tried on
  abstract values (`models.check`), and memory for them."""
  num_train, num_val = len(dataset.train_labels), len(dataset.val_labels)
  strategy, configs = from_config.strategy_and_members(
    config, num_train, study, model.hyperparams
  )
  for c in configs:
    hparams.validate(c, num_train=num_train, extra=model.hyperparams)
  groups = population.statics(configs, dataset, model)
  models.check(
    model,
    [
      (hparams.of_config(c, model.hyperparams), groups[population.shape_of(c)])
      for c in configs
    ],
    dataset.train_images.shape[1:],
  )
  num_devices = jax.device_count()
  for key, static in groups.items():
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


def _search(config, workdir, restart, strategy, configs, dataset, model) -> Result:
  # 1. Resume or start: the checkpoint decides.
  resume_from = checkpoint.prepare_resume(workdir, config.to_dict(), restart, OUTPUTS)
  if distributed.is_writer():
    workdir_lib.write_json(workdir / 'config.json', config.to_dict())
    if strategy.name == 'tpe':  # Optuna writes the study: named before it does
      workdir_lib.note_written(workdir / STUDY)
  progress = Progress(1, unit='model-examples')
  trainer = loop.Trainer.of_run(workdir, config, progress)
  trainer.resume_from(resume_from)
  events = None
  if not strategy.columns:  # sessions declare every column when they start
    events = outputs.sweep_events(workdir, config, configs, resume_from is None)
  pop = population.Population(
    configs,
    dataset,
    _batched_fields(configs, strategy, model),
    trainer,
    models_per_chunk=lambda static: model_axis.models_per_chunk(
      config, static, len(dataset.val_labels), jax.device_count()
    ),
    on_evaluation=None if events is None else events.evaluation,
    model=model,
  )
  # 2. Run the strategy to its end.
  started = time.perf_counter()
  state, rounds, best = population.run(strategy, pop)
  members = outputs.members(rounds, configs, strategy)
  best_member, best_params = _pick(config, members, best, pop)
  progress.close()
  interrupt.training_done()  # a Ctrl-C from here on interrupts the writing
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
    model=model,
  )
  return Result(table, best_params, members, summary, workdir)


def _pick(config, members, best, pop):
  """`(member, params)` of the search's pick. With one seed per configuration
  the driver's pick stands (an adaptive search's, among finishers); where
  seeds are repeats, the best configuration by its mean may not be the one of
  the best single model, and its best seed is trained again."""
  swept = results_lib.columns(space_lib.swept_values(config))
  chosen = results_lib.best_model(members, swept)
  if (
    chosen is None
    or chosen.index == best.member
    or not results_lib.has_repeats(members, swept)
  ):
    return best.member, best.params
  return chosen.index, population.train_again(chosen.index, pop)


def _batched_fields(configs, strategy, model) -> tuple[str, ...]:
  """Fields that vary anywhere in the search: stacked in every chunk, so that
  the chunks of a shape group share one program."""
  one = [hparams.of_config(c, model.hyperparams) for c in configs]
  varying = set(hparams.varying(one)) | set(strategy.schedule) | set(strategy.proposes)
  return tuple(n for n in hparams.names_of(one[0]) if n in varying)
