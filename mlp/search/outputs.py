"""A finished search's outputs: each member's result, the tables, the summary,
the best model's params, TensorBoard events, plots and the report.

`members` stitches each member's reports over the rounds into one result
(its evaluations in order, where it stopped, whom it copied); `write`
writes the workdir's files from those results (process 0 only).
"""

import dataclasses
import shutil

import jax
import ml_collections
import numpy as np
from absl import logging

from mlp import (
  distributed,
  evaluation,
  hparams,
  loop,
  models,
  provenance,
  report,
  tensorboard_events,
)
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.search import space
from mlp.search.strategy import Strategy


@dataclasses.dataclass
class ModelResult:
  """One member's outcome; `history` holds each metric per evaluation."""

  index: int
  config: ml_collections.ConfigDict
  val_accuracy: float
  train_accuracy: float
  final_loss: float
  diverged: bool
  history: dict[str, list]
  search: dict = dataclasses.field(default_factory=dict)  # halving: rung, steps


def members(rounds: list[dict], configs: list, strategy: Strategy) -> list[ModelResult]:
  """Each member's result, from its reports in every round it trained in.

  Args:
    rounds: the driver's rounds (`population.run`).
    configs: each member's config at the start.
    strategy: the search's strategy (its `columns` and `schedule`).
  """
  parts: dict[int, list[tuple[dict, dict]]] = {}
  for round_ in rounds:
    for report_ in round_['reports']:
      parts.setdefault(report_['member'], []).append((round_, report_))
  results = []
  for m in sorted(parts):
    trained = parts[m]
    last_round, last = trained[-1]
    history = {
      k: [x for _, r in trained for x in r['history'][k]] for k in last['history']
    }
    config = configs[m]
    if strategy.proposes:  # the point it was proposed, over its config
      changes = trained[0][1]['changes']
      config = space.model_config(config, {f: changes[f] for f in strategy.proposes})
    if strategy.schedule:
      copied_from = []
      for _, r in trained:
        evaluations = len(r['history']['step'])
        copied_from += [m if r['start'] is None else r['start']] * evaluations
        for f in strategy.schedule:
          value = float(np.float32(r['changes'][f]))
          history.setdefault(f'hparams.{f}', []).extend([value] * evaluations)
      history['copied_from'] = copied_from
      config = ml_collections.ConfigDict(config.to_dict())
      for f in strategy.schedule:  # the values it ended with, where they changed
        value = np.float32(last['changes'][f])
        if value != np.float32(config[f]):
          config[f] = float(value)
    search = {**last_round['info'], 'steps': history['step'][-1]}
    for f in strategy.schedule:  # what it trained with for the most steps
      search[f'{f}_longest'] = _longest(history, f)
    if 'copies' in strategy.columns:
      search['copies'] = sum(r['start'] not in (None, m) for _, r in trained)
    results.append(
      ModelResult(
        index=m,
        config=config,
        val_accuracy=last['val_accuracy'],
        train_accuracy=last['train_accuracy'],
        final_loss=last['final_loss'],
        diverged=last['diverged'],
        history=history,
        search=search,
      )
    )
  return results


def _longest(history: dict, field: str) -> float:
  """The value of `field` a member held for the most steps (the earliest of
  equals)."""
  steps = np.diff([0, *history['step']])
  held: dict[float, int] = {}
  for value, count in zip(history[f'hparams.{field}'], steps, strict=True):
    held[value] = held.get(value, 0) + int(count)
  return max(held, key=lambda v: held[v])


def summary(
  num_models: int,
  search_fields: dict,
  sweep_seconds: float,
  compile_seconds: float,
  model_examples: float,
  fields,
  resumed: bool,
) -> dict:
  """The summary every search writes, with its own `search_fields`.

  Args:
    num_models: the members the search trained.
    search_fields: the strategy's own entries (rungs, intervals, ...).
    sweep_seconds: wall seconds from the first compile to the last step.
    compile_seconds: of those, compiling.
    model_examples: model-examples trained (for the rate while training).
    fields: the hyperparameters batched along the model axis.
    resumed: whether the run resumed from a checkpoint.
  """
  return {
    'num_models': num_models,
    **search_fields,
    'sweep_seconds': sweep_seconds,
    'compile_seconds': compile_seconds,
    'model_examples_per_second': model_examples
    / max(sweep_seconds - compile_seconds, 1e-9),
    'batched_fields': list(fields),
    'jax_version': jax.__version__,
    'resumed': resumed,
    **provenance.record(),
  }


def sweep_events(workdir, config, configs, fresh: bool):
  """The TensorBoard events of a sweep written as it trains (process 0 only);
  a fresh sweep drops old ones."""
  if not distributed.is_writer():
    return None
  directory = workdir / tensorboard_events.DIRNAME
  if fresh:
    shutil.rmtree(directory, ignore_errors=True)
  swept = space.swept_values(config)
  seeds = len(swept.get('seed', ())) > 1
  return tensorboard_events.SweepEvents(
    directory,
    configs,
    hparams.in_effect(configs),
    group_by=[f for f in swept if f != 'seed'] if seeds else (),
  )


def _seed_statistics(model: ModelResult, results: list, swept: list) -> dict:
  """The `SEED_COLUMNS` of `model`'s configuration, if seeds are repeats."""
  if not results_lib.has_repeats(results, swept):
    return {}
  keys = [f for f in swept if f != 'seed']
  (row,) = [
    row
    for row in results_lib.aggregate_rows(results, swept)
    if all(row[f] == model.config[f] for f in keys)
  ]
  return {k: row[k] for k in results_lib.SEED_COLUMNS}


def _search_events(workdir, results: list):
  """The TensorBoard events of an adaptive search or PBT, written at its end
  (process 0 only): each model's curves, and its HParams session with where
  it stopped (`rung`, `steps`, `bracket`) or its `lineage` (PBT: the models
  whose weights it copied, in order)."""
  if not distributed.is_writer():
    return None
  directory = workdir / tensorboard_events.DIRNAME
  shutil.rmtree(directory, ignore_errors=True)  # all of it is written again
  ordered = sorted(results, key=lambda r: r.index)
  extra = {r.index: _search_values(r) for r in ordered}
  keys = (*hparams.in_effect([r.config for r in ordered]), *extra[ordered[0].index])
  configs = {r.index: {**r.config.to_dict(), **extra[r.index]} for r in ordered}
  events = tensorboard_events.SweepEvents(directory, configs, keys)
  for r in ordered:
    curves = {t: r.history[t] for t in tensorboard_events.SCALARS if t in r.history}
    for i, step in enumerate(r.history['step']):
      events.run(r.index).scalars(step, {t: v[i] for t, v in curves.items()})
  return events


def _search_values(result: ModelResult) -> dict:
  """An adaptive search's or PBT's columns of a model, for its HParams session."""
  values = dict(result.search)
  if 'copied_from' in result.history:
    sources = [int(s) for s in result.history['copied_from']]
    lineage = [s for i, s in enumerate(sources) if i == 0 or s != sources[i - 1]]
    values['lineage'] = ' > '.join(map(str, lineage))
  return values


def write(
  config,
  workdir,
  dataset,
  results,
  best,
  summary_: dict,
  strategy: Strategy,
  events=None,
  model: models.Model = models.MLP,
) -> tuple[dict, list[dict]]:
  """Writes the results tables, the best model's params and the summary, the
  TensorBoard sessions' ends, the plots and the report.

  Rows rank by validation accuracy (diverged models last), then by their
  place in the grid; each says the steps it trained, and the pick is marked.

  Args:
    config: the sweep's config.
    workdir: the sweep's workdir.
    dataset: the data (the best model's test accuracy is measured here).
    results: each member's `ModelResult`.
    best: `(member, params)` of the search's pick, or `(None, None)`.
    summary_: the summary so far (`summary`).
    strategy: the search's strategy (its pick's rule, whether it is adaptive).
    events: the sweep's TensorBoard events if written as it trained, else
      `None`: an adaptive search's are written here.
    model: the model searched (`models.Model`).

  Returns:
    The summary, and the rows of `results.csv` (best first).
  """
  results = sorted(results, key=lambda r: (r.diverged, -r.val_accuracy, r.index))
  summary_['num_diverged'] = sum(r.diverged for r in results)
  swept = results_lib.columns(space.swept_values(config))
  rule = strategy.pick_rule
  if results_lib.has_repeats(results, swept):
    rule = 'the best mean val accuracy over the seeds, then its best seed'
  pick = results_lib.Pick(best[0], rule)
  summary_['best'] = _best(workdir, dataset, results, best, swept, model)
  if events is None and strategy.columns:
    events = _search_events(workdir, results)
  if events is not None:
    picked = summary_['best']
    events.finish(
      {r.index: r.diverged for r in results},
      None if picked is None else (best[0], picked['steps'], picked['test_accuracy']),
    )
  if distributed.is_writer():
    results_lib.write(workdir, results, swept, pick)
    workdir_lib.write_json(workdir / 'summary.json', summary_)
    if config.write_plots:
      from mlp import sweep_plots

      sweep_plots.write_sweep_plots(workdir)
      if strategy.columns:
        from mlp import search_plots

        search_plots.write_search_plots(workdir)
    report.write_sweep_report(workdir)
  return summary_, _print_top(results, swept, pick, summary_)


def _print_top(results, swept, pick, summary_: dict) -> list[dict]:
  """Prints the pick's caption and the table's top 10; returns all its rows."""
  header, table = results_lib.tables(results, swept, pick)['results']
  print(pick.caption())
  print(results_lib.markdown_table(header, table[:10]))
  logging.info(
    'Sweep of %d models done in %.1fs (compile %.1fs).',
    len(results),
    summary_['sweep_seconds'],
    summary_['compile_seconds'],
  )
  return table


def _best(workdir, dataset, results: list, best, swept: list, model) -> dict | None:
  """The summary's `best`: the pick's fields, val accuracy, steps and test
  accuracy (the only test accuracy a search computes); its params are
  written to `best_params.npz`. `None` if every model diverged."""
  member, params = best
  if member is None:
    logging.error('Every model diverged: lower the learning rates of the sweep.')
    return None
  picked = next(r for r in results if r.index == member)
  if distributed.is_writer():
    workdir_lib.save_params(workdir / 'best_params.npz', models.flat(params))
  static = loop.static_for([picked.config], dataset, model=model)
  return {
    **{f: picked.config[f] for f in swept},
    **_seed_statistics(picked, results, swept),
    'val_accuracy': picked.val_accuracy,
    'steps': picked.history['step'][-1],
    'test_accuracy': evaluation.split_accuracy(
      params, dataset.test_images, dataset.test_labels, model, static
    ),
  }
