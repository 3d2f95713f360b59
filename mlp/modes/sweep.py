"""`--mode=sweep`: a search over many models, trained vmapped at once.

The config's `sweep` gives the members (a grid or random draws) and its
`search` the strategy (grid, random, halving, Hyperband, population-based
training: `mlp.search.from_config`). The population driver
(`mlp.search.population`) trains the strategy's rounds, grouped by shape,
chunked and sharded across devices and hosts, and checkpoints them, so a
killed search resumes where it stopped. This mode validates, loads, makes
the strategy, runs it and writes the workdir's files.
"""

import math
import time

import jax
import ml_collections
from absl import logging

from mlp import (
  checkpoint,
  data,
  distributed,
  grid,
  hparams,
  loop,
  model_axis,
  report,
  resources,
)
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.progress import Progress
from mlp.search import from_config, outputs, population

OUTPUTS = (
  'results.csv',
  'results.md',
  f'{results_lib.PER_SEED}.csv',
  f'{results_lib.PER_SEED}.md',
  'curves.jsonl',
  'summary.json',
  'best_params.npz',
)


def run(config: ml_collections.ConfigDict, workdir: str, restart: bool = False) -> dict:
  """Trains the search of `config` and writes the sweep's workdir files.

  Writes `config.json`, `results.csv`, `results.md` (best first),
  `curves.jsonl` (each model's learning curves), `summary.json`,
  `best_params.npz`, `report.md`, `plots/`, `tensorboard/` and
  `checkpoints/` (resumed when the same command runs again).

  Args:
    config: a sweep config (see `configs/sweep.py`).
    workdir: output directory.
    restart: delete a previous sweep's outputs in `workdir` and start over.

  Returns:
    The summary dict.
  """
  grid.swept_values(config)  # a config without `sweep` is refused first
  if config.write_plots and distributed.is_writer():
    report.prefetch('mlp.sweep_plots')  # matplotlib: imported while the sweep runs
  # 1. Everything that can refuse the config runs before the workdir is created.
  dataset = data.from_config(config)
  num_train, num_val = len(dataset.train_labels), len(dataset.val_labels)
  strategy, configs = from_config.strategy_and_members(config, num_train)
  for c in configs:
    hparams.validate(c, num_train=num_train)
  statics = population.statics(configs, dataset)
  num_devices = jax.device_count()
  for key, static in statics.items():
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
  workdir = workdir_lib.prepare(workdir)
  with distributed.claim_workdir(workdir):
    return _search(config, workdir, restart, strategy, configs, dataset)


def _search(config, workdir, restart, strategy, configs, dataset) -> dict:
  # 2. Resume or start: the checkpoint decides.
  resume_from = checkpoint.prepare_resume(workdir, config.to_dict(), restart, OUTPUTS)
  if distributed.is_writer():
    workdir_lib.write_json(workdir / 'config.json', config.to_dict())
  progress = Progress(1, unit='model-examples')
  trainer = loop.Trainer.of_run(workdir, config, progress)
  trainer.resume_from(resume_from)
  # Fields that vary anywhere in the search are stacked in every chunk, so
  # that the chunks of a group share one program.
  varying = set(hparams.varying([hparams.of_config(c) for c in configs]))
  fields = tuple(n for n in hparams.NAMES if n in varying | set(strategy.schedule))
  events = None
  if not strategy.columns:  # sessions declare every column when they start
    events = outputs.sweep_events(workdir, config, configs, resume_from is None)
  num_val = len(dataset.val_labels)
  pop = population.Population(
    configs,
    dataset,
    fields,
    trainer,
    models_per_chunk=lambda static: model_axis.models_per_chunk(
      config, static, num_val, jax.device_count()
    ),
    on_evaluation=None if events is None else events.evaluation,
  )
  logging.info(
    '%s of %d models in %d shape group(s) on %d %s device(s); batched: %s.',
    {'grid': 'Grid search', 'random': 'Random search'}.get(
      strategy.name, strategy.name.capitalize()
    ),
    len(configs),
    len(pop.statics),
    jax.device_count(),
    jax.default_backend(),
    ', '.join(fields),
  )
  # 3. Run the strategy to its end.
  started = time.perf_counter()
  state, rounds, best = population.run(strategy, pop)
  results = outputs.members(rounds, configs, strategy)
  best_member, best_params = best.member, best.params
  swept = results_lib.columns(grid.swept_values(config))
  chosen = results_lib.best_model(results, swept)
  if chosen is not None and chosen.index != best.member:
    # Seeds are repeats: the best configuration (by its mean) is not the one
    # of the best single model, so train its best seed again.
    best_member, best_params = chosen.index, population.train_again(chosen.index, pop)
  progress.close()
  # 4. Write the tables, the summary, the plots and the report.
  summary = outputs.summary(
    len(configs),
    {
      **strategy.summary(state),
      'model_steps': sum(r.history['step'][-1] for r in results),
    },
    time.perf_counter() - started,
    pop.compile_seconds,
    pop.model_examples,
    fields,
    resume_from is not None,
  )
  return outputs.write(
    config, workdir, dataset, results, (best_member, best_params), summary, events
  )
