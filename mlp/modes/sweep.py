"""`--mode=sweep`: every model of a hyperparameter grid trained at once.

The grid (`grid.points`) is grouped by the fields that change shapes (hidden
size, batch size): one compiled program per group, whose per-model
hyperparameters are stacked along a model axis. Each group is trained in
chunks that fit in memory, padded to a multiple of the device count and
sharded across devices (and hosts). Every chunk is a job of the training loop
(`loop.Trainer`), so a killed sweep resumes where it stopped.
"""

import dataclasses
import functools
import math
import re
import shutil
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from mlp import (
  checkpoint,
  data,
  distributed,
  evaluation,
  grid,
  hparams,
  interrupt,
  loop,
  model_axis,
  provenance,
  report,
  resources,
  search,
  tensorboard_events,
)
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.errors import UserError
from mlp.progress import Progress
from mlp.step import core

OUTPUTS = (
  'results.csv',
  'results.md',
  f'{results_lib.PER_SEED}.csv',
  f'{results_lib.PER_SEED}.md',
  'curves.jsonl',
  'summary.json',
  'best_params.npz',
)


@dataclasses.dataclass
class ModelResult:
  """One grid point's outcome; `history` holds each metric per evaluation."""

  index: int
  config: ml_collections.ConfigDict
  val_accuracy: float
  train_accuracy: float
  final_loss: float
  diverged: bool
  history: dict[str, list]
  search: dict = dataclasses.field(default_factory=dict)  # halving: rung, steps

  def to_json(self) -> dict:
    return {k: v for k, v in dataclasses.asdict(self).items() if k != 'config'}


def _chunk_results(chunk, indices, outcome: loop.Outcome) -> list[ModelResult]:
  history = outcome.history
  curves = {
    k: np.stack([np.asarray(h[k]) for h in history], axis=1) for k in history[0]
  }
  finite = model_axis.finite_per_model(outcome.state.params)
  diverged = loop.diverged(curves['train_loss'], outcome.start_loss)
  results = []
  for i, config in enumerate(chunk):
    results.append(
      ModelResult(
        index=indices[i],
        config=config,
        val_accuracy=float(curves['val_accuracy'][i, -1]),
        train_accuracy=float(curves['train_accuracy'][i, -1]),
        final_loss=float(curves['train_loss'][i, -1]),
        diverged=bool(diverged[i] or not finite[i]),
        history={k: v[i].tolist() for k, v in curves.items()},
      )
    )
  return results


class Best:
  """The best model so far (by val accuracy, never a diverged one).

  Its params are kept in each checkpoint (`Trainer.finish(..., kept=...)`), so
  a resumed sweep finds them again.
  """

  def __init__(self, index: int | None = None, params: dict | None = None):
    self.index, self.params = index, params

  def offer(self, results: list[ModelResult], params, known: dict) -> None:
    """Offers a chunk's `results` in turn, each kept if it beats the best so
    far: higher val accuracy, or the same and an earlier place in the grid (as
    `results.csv` ranks them); never a diverged one.

    Args:
      results: the chunk's results, in the order of its model axis.
      params: the chunk's params, model axis first (only a winner's row is
        brought to the host).
      known: the results before this chunk, by index.
    """
    seen = dict(known)
    for i, result in enumerate(results):
      best_so_far = seen.get(self.index)
      seen[result.index] = result
      if result.diverged or (
        best_so_far is not None
        and (result.val_accuracy, -result.index)
        <= (best_so_far.val_accuracy, -best_so_far.index)
      ):
        continue
      self.keep(
        result.index, distributed.to_host(jax.tree.map(lambda x, i=i: x[i], params))
      )

  def keep(self, index: int, params) -> None:
    """Makes model `index`, with `params` (host arrays), the best."""
    self.index, self.params = index, params


def _resumed_trainer(
  config, workdir, progress, resume_from
) -> tuple[loop.Trainer, Best]:
  """The sweep's trainer, resumed from `resume_from`, and the best model so far."""
  trainer = loop.Trainer.of_run(workdir, config, progress)
  trainer.resume_from(resume_from)
  jobs = list(trainer.finished.values())
  kept = {k.removeprefix('best/'): v for k, v in trainer.kept.items()}
  return trainer, Best(jobs[-1]['best'] if jobs else None, kept or None)


def run(config: ml_collections.ConfigDict, workdir: str, restart: bool = False) -> dict:
  """Trains every model of `config.sweep` and writes the sweep's workdir files.

  Writes `config.json`, `results.csv`, `results.md` (sorted by validation
  accuracy), `curves.jsonl` (each model's learning curves), `summary.json`,
  `best_params.npz`, `report.md`, `plots/` and `checkpoints/` (resumed when
  the same command runs again).

  Args:
    config: a sweep config (see `configs/sweep.py`).
    workdir: output directory.
    restart: delete a previous sweep's outputs in `workdir` and start over.

  Returns:
    The summary dict.
  """
  brackets = _brackets(config)
  points = grid.points(config if brackets is None else _draws(config, brackets))
  explore = _pbt_settings(config)
  configs = [grid.model_config(config, p) for p in points]
  if brackets is not None:
    if config.search == 'halving':
      ends = brackets[0].ends
      brackets = [
        search.Bracket(ends, search.rung_sizes(len(points), len(ends), config.eta))
      ]
    for c in configs:  # the rungs stop a model; its schedule is the full run's
      c.num_iters = brackets[0].ends[-1]
  for c in configs:
    hparams.validate(c)
  if config.write_plots and distributed.is_writer():
    report.prefetch('mlp.sweep_plots')  # matplotlib: imported while the sweep runs
  # Everything that can refuse the config runs before the workdir is created.
  dataset = data.from_config(config)
  num_train = len(dataset.train_labels)
  for c in configs:
    hparams.validate(c, num_train=num_train)
  groups: dict[tuple, list[int]] = {}
  for i, c in enumerate(configs):
    groups.setdefault((c.hidden_size, c.batch_size), []).append(i)
  statics = {
    key: loop.static_for([configs[i] for i in idx], dataset)
    for key, idx in groups.items()
  }
  num_val, num_devices = len(dataset.val_labels), jax.device_count()
  for key, static in statics.items():
    resources.check(static, num_val, num_models=1)
    model_axis.models_per_chunk(config, static, num_val, num_devices)
    if explore is not None:  # the whole population is one program
      resources.check(
        static,
        num_val,
        -(-len(groups[key]) // num_devices),
        fix='lower the population (num_samples) or hidden_size',
      )
  workdir = workdir_lib.prepare(workdir)
  with distributed.claim_workdir(workdir):
    return _sweep(
      config, workdir, restart, configs, dataset, groups, statics, brackets, explore
    )


def _sweep(
  config, workdir, restart, configs, dataset, groups, statics, brackets, explore
) -> dict:
  resume_from = checkpoint.prepare_resume(workdir, config.to_dict(), restart, OUTPUTS)
  if distributed.is_writer():
    workdir_lib.write_json(workdir / 'config.json', config.to_dict())
  swept = results_lib.columns(grid.swept_values(config))

  # Fields that vary anywhere in the grid are stacked in every chunk, so that
  # the chunks of a group share one program.
  fields = hparams.varying([hparams.of_config(c) for c in configs])
  devices = jax.devices()
  mesh = model_axis.model_mesh()
  device = model_axis.replicated_data(dataset, mesh)
  if explore is not None:
    fields = tuple(n for n in hparams.NAMES if n in {*fields, *explore.fields})
    return _pbt(config, workdir, resume_from, configs, dataset, fields, explore)
  if brackets is not None:
    return _adaptive(
      config, workdir, resume_from, configs, dataset, fields, groups, brackets
    )
  total = sum(
    len(idx) * statics[k].max_iters * statics[k].batch_size for k, idx in groups.items()
  )
  progress = Progress(total, unit='model-examples')
  trainer, best = _resumed_trainer(config, workdir, progress, resume_from)
  results = {
    r['index']: ModelResult(config=configs[r['index']], **r)
    for job in trainer.finished.values()
    for r in job['results']
  }
  events = _events(workdir, config, configs, fresh=resume_from is None)
  if resume_from is not None:
    logging.info(
      'Resuming from %s: %d of %d models done.',
      resume_from[0],
      len(results),
      len(configs),
    )
  logging.info(
    'Sweep of %d models in %d shape group(s) on %d %s device(s); batched: %s.',
    len(configs),
    len(groups),
    len(devices),
    jax.default_backend(),
    ', '.join(fields),
  )

  compile_seconds = 0.0
  programs, chunk_sizes = {}, {}
  started = time.perf_counter()
  for key, idx in groups.items():
    static = statics[key]
    chunk_size = min(
      model_axis.models_per_chunk(
        config, static, len(dataset.val_labels), len(devices)
      ),
      math.ceil(len(idx) / len(devices)) * len(devices),
    )
    chunk_sizes[key] = chunk_size
    program = None
    for start in range(0, len(idx), chunk_size):
      chunk_indices = idx[start : start + chunk_size]
      job = f'models {chunk_indices[0]}-{chunk_indices[-1]}'
      if job in trainer.finished:
        progress.done += len(chunk_indices) * static.max_iters * static.batch_size
        continue
      chunk = [configs[i] for i in chunk_indices]
      padded = chunk + [chunk[-1]] * (chunk_size - len(chunk))  # one shape, one compile
      values, axes = hparams.stack([hparams.of_config(c) for c in padded], fields)
      values = model_axis.put_models(values, mesh, axes)
      if program is None:
        program = programs[key] = loop.compile_many(static, values, axes, device, mesh)
        compile_seconds += program.compile_seconds
        progress.start_time += program.compile_seconds  # rates count training only

      def describe(metrics, static=static, chunk_indices=chunk_indices):
        return (
          f'H {static.hidden_size}, models {chunk_indices[0] + 1}-'
          f'{chunk_indices[-1] + 1}: step {max(metrics["step"])}/{static.max_iters}, '
          f'best val acc {np.nanmax(metrics["val_accuracy"]):.4f}'
        )

      def on_evaluation(metrics, chunk_indices=chunk_indices):
        if events is not None:
          events.evaluation(chunk_indices, metrics)

      outcome = trainer.train(
        job,
        program,
        values,
        device,
        describe=describe,
        on_evaluation=on_evaluation,
        num_models=len(chunk),
      )
      chunk_results = _chunk_results(chunk, chunk_indices, outcome)
      best.offer(chunk_results, outcome.state.params, results)
      results.update((r.index, r) for r in chunk_results)
      trainer.finish(
        job,
        {'results': [r.to_json() for r in chunk_results], 'best': best.index},
        kept={f'best/{k}': v for k, v in (best.params or {}).items()},
      )
  chosen = results_lib.best_model(list(results.values()), swept)
  if chosen is not None and chosen.index != best.index:
    # Seeds are repeats: the best configuration (by its mean) is not the one
    # of the best single model, so train its best seed again, as one more job.
    key = (chosen.config.hidden_size, chosen.config.batch_size)
    static, chunk_size = statics[key], chunk_sizes[key]
    values, axes = hparams.stack(
      [hparams.of_config(chosen.config)] * chunk_size, fields
    )
    values = model_axis.put_models(values, mesh, axes)
    program = programs.get(key) or loop.compile_many(static, values, axes, device, mesh)
    outcome = trainer.train(
      f'model {chosen.index} again',
      program,
      values,
      device,
      describe=lambda m: f'model {chosen.index + 1} again: step {max(m["step"])}',
      num_models=0,
    )
    best.keep(
      chosen.index,
      distributed.to_host(jax.tree.map(lambda x: x[0], outcome.state.params)),
    )
    trainer.finish(
      f'model {chosen.index} again',
      {'results': [], 'best': best.index},
      kept={f'best/{k}': v for k, v in best.params.items()},
    )
  progress.close()
  sweep_seconds = time.perf_counter() - started
  return _finish(
    config,
    workdir,
    dataset,
    list(results.values()),
    best,
    _summary(
      len(configs), {}, sweep_seconds, compile_seconds, total, fields, resume_from
    ),
    events=events,
  )


def _brackets(config: ml_collections.ConfigDict) -> list | None:
  """The brackets of an adaptive search (else `None`): `search.Bracket`s.

  'halving' is one bracket of every model (its sizes set once the models are
  known); 'hyperband' is Li et al.'s brackets of random draws.
  """
  name = config.get('search', 'grid')
  if name not in search.ADAPTIVE:
    return None
  for field in hparams.SEARCH:
    field.check(config.get(field.name, field.default))
  max_iters = config.max_iters or config.num_iters
  if config.min_iters > max_iters:
    raise UserError(
      f'config field min_iters={config.min_iters} is invalid: expected at most '
      f'max_iters={max_iters} (set it with --config.min_iters=VALUE)'
    )
  if grid.swept_values(config).get('num_iters'):
    raise UserError(
      f'config.sweep.num_iters cannot be swept with search={name}: the rungs set '
      "each model's steps (set --config.max_iters and --config.min_iters)"
    )
  if name == 'hyperband':
    if config.get('num_samples', 0) != 0:
      raise UserError(
        f'config field num_samples={config.num_samples} is invalid with '
        'search=hyperband: its brackets set how many models are drawn (set it to 0)'
      )
    return search.hyperband(config.min_iters, max_iters, config.eta)
  return [search.Bracket(search.rungs(config.min_iters, max_iters, config.eta), [])]


def _draws(config: ml_collections.ConfigDict, brackets) -> ml_collections.ConfigDict:
  """The config whose points are the search's models (Hyperband: as many
  random draws as its brackets start)."""
  if config.search != 'hyperband':
    return config
  draws = ml_collections.ConfigDict(config.to_dict())
  draws.num_samples = sum(b.sizes[0] for b in brackets)
  return draws


def _work(brackets, bracket: int, rung: int, alive_batches, eta) -> float:
  """Model-examples left from the start of `rung` of `bracket`, for the
  progress (later brackets at the mean batch size of the models alive)."""
  batch = float(np.mean(alive_batches)) if alive_batches else 0.0
  count, work = len(alive_batches), 0.0
  for b in range(bracket, len(brackets)):
    ends = brackets[b].ends
    for j in range(rung if b == bracket else 0, len(ends)):
      work += count * (ends[j] - (ends[j - 1] if j else 0)) * batch
      count = max(count // eta, 1)
    if b + 1 < len(brackets):
      count = brackets[b + 1].sizes[0]
  return work


def _rung_states_dir(directory, job: str):
  """Where a rung job's final state waits for the next rung (a checkpoint)."""
  return directory / 'rungs' / re.sub(r'[^A-Za-z0-9-]+', '_', job)


def _survivors_state(directory, located: dict, members: list[int], like):
  """The `members`' training state at the end of the previous rung.

  Args:
    directory: the checkpoint directory.
    located: model index -> `(job, size, position)` in the previous rung.
    members: the models of the new job (padded), in order.
    like: the new program's initial state (shapes, dtypes and shardings).

  Returns:
    The state of `members`, model axis first, placed as `like` is.
  """
  loaded, rows, offset = [], {}, 0
  for job, size in dict.fromkeys((job, size) for job, size, _ in located.values()):
    if not any(located[m][0] == job for m in members):
      continue
    abstract = _resized(like, size)
    path = checkpoint.all_checkpoints(_rung_states_dir(directory, job))[-1]
    try:
      contents = checkpoint.read(path)
    except checkpoint.Damaged as e:
      raise UserError(
        f'the state of rung job {job!r} in {path} is damaged ({e}): pass --restart '
        'to start over'
      ) from None
    loaded.append(checkpoint.restore(contents, like=abstract, path=path))
    rows[job], offset = offset, offset + size
  joined = search.concat_models(loaded, core.STATE_AXES)
  picked = search.gather_models(
    joined, core.STATE_AXES, [rows[located[m][0]] + located[m][2] for m in members]
  )
  return jax.tree.map(lambda x, to: distributed.put(x, to.sharding), picked, like)


def _resized(state: core.TrainState, size: int) -> core.TrainState:
  """Shapes and dtypes of `state` with `size` models."""

  def resize(axis, subtree):
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(
        x.shape if axis is None else (size, *x.shape[1:]), x.dtype
      ),
      subtree,
    )

  return jax.tree.map(resize, core.STATE_AXES, state, is_leaf=lambda x: x is None)


def _adaptive(config, workdir, resume_from, configs, dataset, fields, groups, brackets):
  """Successive halving, in one bracket or in Hyperband's, one after another.

  Each rung trains its models from where the previous rung left them, by
  shape group and in chunks like a sweep, each chunk padded to the device
  count and compiled once per rung size: dropped models are not trained at
  all. A rung job's final state waits in `checkpoints/rungs/` for the next
  rung, and the finished jobs' records (each model's evaluations, hence rung
  membership) are in the checkpoints, so a killed search resumes exactly.
  The best model is the best of the models that reached a bracket's last
  rung.
  """
  mesh = model_axis.model_mesh()
  device = model_axis.replicated_data(dataset, mesh)
  num_devices = jax.device_count()
  eta = config.eta
  progress = Progress(
    int(
      _work(
        brackets, 0, 0, [c.batch_size for c in configs[: brackets[0].sizes[0]]], eta
      )
    ),
    unit='model-examples',
  )
  trainer, best = _resumed_trainer(config, workdir, progress, resume_from)
  jobs = list(trainer.finished.values())
  if resume_from is not None:
    logging.info('Resuming from %s: %d rung job(s) done.', resume_from[0], len(jobs))
  logging.info(
    '%s of %d models on %d %s device(s): %s.',
    'Successive halving' if len(brackets) == 1 else 'Hyperband',
    len(configs),
    num_devices,
    jax.default_backend(),
    '; '.join(
      f'rungs end at steps {", ".join(map(str, b.ends))} with '
      f'{", ".join(map(str, b.sizes))} models'
      for b in brackets
    ),
  )
  parts: dict[int, list[dict]] = {}  # each model's record of each rung
  reached_end: dict[int, ModelResult] = {}  # models that finished a bracket
  compile_seconds = 0.0
  started = time.perf_counter()
  for number, bracket in enumerate(brackets):
    alive = list(range(bracket.first, bracket.first + bracket.sizes[0]))
    located: dict[int, tuple] = {}
    prefix = f'bracket {number}, ' if len(brackets) > 1 else ''
    for rung, end in enumerate(bracket.ends):
      begin = bracket.ends[rung - 1] if rung else 0
      last = rung == len(bracket.ends) - 1
      batches = [configs[m].batch_size for m in alive]
      progress.total = progress.done + int(_work(brackets, number, rung, batches, eta))
      survivors_of_rung = set(alive)
      where = {}
      for (hidden_size, batch_size), idx in groups.items():
        members = [m for m in idx if m in survivors_of_rung]
        if not members:
          continue
        static = loop.static_for([configs[m] for m in members], dataset, max_iters=end)
        chunk_size = min(
          model_axis.models_per_chunk(
            config, static, len(dataset.val_labels), num_devices
          ),
          math.ceil(len(members) / num_devices) * num_devices,
        )
        program = None
        for start in range(0, len(members), chunk_size):
          chunk = members[start : start + chunk_size]
          job = (
            f'{prefix}rung {rung}, H {hidden_size}, batch {batch_size}, '
            f'models {chunk[0]}-{chunk[-1]}'
          )
          padded = search.padded(chunk, chunk_size)
          record = trainer.finished.get(job)
          if record is not None:
            progress.done += len(chunk) * (end - begin) * batch_size
          else:
            values, axes = hparams.stack(
              [hparams.of_config(configs[m]) for m in padded], fields
            )
            values = model_axis.put_models(values, mesh, axes)
            if program is None:
              program = loop.compile_many(static, values, axes, device, mesh)
              compile_seconds += program.compile_seconds
              progress.start_time += program.compile_seconds
            initial, initial_loss = None, None
            if rung:
              initial = _survivors_state(
                trainer.directory, located, padded, program.init(values)
              )
              initial_loss = [  # divergence is judged as in a run alone
                trainer.finished[located[m][0]]['start_loss'][located[m][2]]
                for m in padded
              ]

            where_am_i = (
              f'{prefix}rung {rung + 1}/{len(bracket.ends)}, H {hidden_size}, '
              f'{len(chunk)} models'
            )

            def describe(metrics, where_am_i=where_am_i, end=end):
              return (
                f'{where_am_i}: step {max(metrics["step"])}/{end}, '
                f'best val acc {np.nanmax(metrics["val_accuracy"]):.4f}'
              )

            outcome = trainer.train(
              job,
              program,
              values,
              device,
              describe=describe,
              num_models=len(chunk),
              state=initial,
              initial_loss=initial_loss,
            )
            results = _chunk_results([configs[m] for m in chunk], chunk, outcome)
            if last:
              best.offer(results, outcome.state.params, reached_end)
              reached_end.update((r.index, r) for r in results)
            else:
              checkpoint.save(
                _rung_states_dir(trainer.directory, job),
                outcome.state,
                {'job': job},
                keep=1,
              )
            record = {
              'results': [r.to_json() for r in results],
              'size': len(padded),
              'start_loss': outcome.start_loss,
              'best': best.index,
            }
            trainer.finish(
              job,
              record,
              kept={f'best/{k}': v for k, v in (best.params or {}).items()},
            )
          for position, r in enumerate(record['results']):
            where[r['index']] = (job, record['size'], position)
            parts.setdefault(r['index'], []).append(r)
            if last:
              reached_end[r['index']] = ModelResult(config=configs[r['index']], **r)
      if last:
        break
      ended = [parts[m][-1] for m in alive]
      alive = search.survivors(
        [r['index'] for r in ended],
        [r['val_accuracy'] for r in ended],
        [r['diverged'] for r in ended],
        bracket.sizes[rung + 1],
      )
      located = where
      logging.info(
        '%sRung %d/%d done at step %d: %d of %d models go on.',
        prefix.capitalize(),
        rung + 1,
        len(bracket.ends),
        end,
        len(alive),
        len(ended),
      )
      if not alive:
        break
  progress.close()
  if distributed.is_writer():  # the states between rungs are spent
    shutil.rmtree(trainer.directory / 'rungs', ignore_errors=True)
  sweep_seconds = time.perf_counter() - started
  results, summary_brackets = [], []
  for number, bracket in enumerate(brackets):
    models = range(bracket.first, bracket.first + bracket.sizes[0])
    summary_brackets.append(
      {
        'rungs': bracket.ends,
        'rung_sizes': [
          sum(1 for m in models if len(parts[m]) > k) for k in range(len(bracket.ends))
        ],
        'models': [bracket.first, bracket.first + bracket.sizes[0]],
      }
    )
    for m in models:
      records = parts[m]
      history = {
        k: [x for r in records for x in r['history'][k]] for k in records[-1]['history']
      }
      final = {**records[-1], 'history': history}
      final['search'] = {
        **({'bracket': number} if len(brackets) > 1 else {}),
        'rung': len(records) - 1,
        'steps': bracket.ends[len(records) - 1],
      }
      results.append(ModelResult(config=configs[m], **final))
  return _finish(
    config,
    workdir,
    dataset,
    results,
    best,
    _summary(
      len(configs),
      {
        'search': config.search,
        'brackets': summary_brackets,
        **(
          {k: summary_brackets[0][k] for k in ('rungs', 'rung_sizes')}
          if len(brackets) == 1
          else {}
        ),
        'model_steps': sum(r.search['steps'] for r in results),
      },
      sweep_seconds,
      compile_seconds,
      progress.done,
      fields,
      resume_from,
    ),
  )


def _pbt_settings(config: ml_collections.ConfigDict) -> search.Explore | None:
  """Population-based training's exploration (else `None`), checked."""
  if config.get('search', 'grid') != 'pbt':
    return None
  for field in hparams.SEARCH:
    field.check(config.get(field.name, field.default))
  swept = grid.swept_values(config)
  for name in ('hidden_size', 'batch_size', 'num_iters'):
    if len(set(swept.get(name, ()))) > 1:
      raise UserError(
        f'config.sweep.{name} cannot take several values with search=pbt: its '
        'members copy each other, so they share shapes and training length'
      )
  floats = [f.name for f in hparams.PER_MODEL if f.dtype is float]
  names = tuple(config.get('pbt_explore', ())) or tuple(
    f for f in swept if f in floats and len(set(swept[f])) > 1
  )
  for name in names:
    values = swept.get(name, ())
    if name not in floats or len(values) < 2 or min(values) <= 0:
      raise UserError(
        f'config.pbt_explore names {name!r}: expected a per-model float field swept '
        f'over positive values ({", ".join(floats)}), whose range bounds the search'
      )
  if not names:
    raise UserError(
      'search=pbt needs a float field swept over a range to explore, e.g. '
      "--config.sweep.learning_rate='(0.01, 1.0)'"
    )
  return search.Explore(
    fields=names,
    low=tuple(float(min(swept[n])) for n in names),
    high=tuple(float(max(swept[n])) for n in names),
    perturb=float(config.pbt_perturb),
    resample=float(config.pbt_resample),
    fraction=float(config.pbt_fraction),
  )


def _pbt(config, workdir, resume_from, configs, dataset, fields, explore):
  """Population-based training: one compiled program for the whole run.

  Every `pbt_interval` steps is a job of the loop; between two jobs,
  `search.exploit_explore` (jitted) replaces the worst members' state and
  hyperparameters on the device, and the next job continues with the same
  program. Each job's record (each member's evaluations, whom it copied and
  its hyperparameters afterwards) goes into the next job's checkpoints, so
  a killed run resumes exactly.
  """
  mesh = model_axis.model_mesh()
  device = model_axis.replicated_data(dataset, mesh)
  num_devices = jax.device_count()
  members = list(range(len(configs)))
  padded = search.padded(members, math.ceil(len(members) / num_devices) * num_devices)
  static = loop.static_for(configs, dataset)
  interval = config.pbt_interval or static.eval_every
  ends = [*range(interval, static.max_iters, interval), static.max_iters]
  values, axes = hparams.stack([hparams.of_config(configs[m]) for m in padded], fields)
  progress = Progress(
    len(members) * static.max_iters * static.batch_size, unit='model-examples'
  )
  trainer, best = _resumed_trainer(config, workdir, progress, resume_from)
  jobs = list(trainer.finished.values())
  if resume_from is not None:
    logging.info('Resuming from %s: %d interval(s) done.', resume_from[0], len(jobs))
  logging.info(
    'Population-based training of %d members on %d %s device(s): exploit and '
    'explore (%s) every %d steps.',
    len(members),
    num_devices,
    jax.default_backend(),
    ', '.join(explore.fields),
    interval,
  )
  started = time.perf_counter()
  program = loop.compile_many(
    static, model_axis.put_models(values, mesh, axes), axes, device, mesh
  )
  progress.start_time += program.compile_seconds
  step = jax.jit(
    functools.partial(
      search.exploit_explore,
      num_members=len(members),
      explore=explore,
      state_axes=core.STATE_AXES,
    )
  )
  state, initial_loss, records, used = None, None, [], []
  for k, end in enumerate(ends):
    begin = ends[k - 1] if k else 0
    job = f'interval {k}: steps {begin}-{end}'
    used.append(values)
    record = trainer.finished.get(job)
    if record is not None:
      progress.done += len(members) * (end - begin) * static.batch_size
    else:
      on_device = model_axis.put_models(values, mesh, axes)

      def describe(metrics, end=end):
        return (
          f'PBT, {len(members)} members: step {max(metrics["step"])}/{ends[-1]}, '
          f'best val acc {np.nanmax(metrics["val_accuracy"][: len(members)]):.4f}'
        )

      outcome = trainer.train(
        job,
        program,
        on_device,
        device,
        describe=describe,
        num_models=len(members),
        state=state,
        until=end,
        initial_loss=initial_loss,
      )
      losses = np.stack([h['train_loss'] for h in outcome.history], axis=1)
      healthy = model_axis.finite_per_model(outcome.state.params) & ~loop.diverged(
        losses, outcome.start_loss
      )
      results = _chunk_results([configs[m] for m in members], members, outcome)
      record = {'results': [r.to_json() for r in results]}
      if k == len(ends) - 1:
        best.offer(results, outcome.state.params, {})
        trainer.finish(
          job,
          {**record, 'best': best.index},
          kept={f'best/{k}': v for k, v in (best.params or {}).items()},
        )
      else:
        accuracy = np.asarray(outcome.history[-1]['val_accuracy'], np.float32)
        new_state, new_values, source = step(
          jax.random.fold_in(jax.random.key(config.seed), k),
          outcome.state,
          on_device,
          accuracy,
          healthy,
        )
        state = jax.device_put(
          new_state, jax.tree.map(lambda x: x.sharding, outcome.state)
        )
        record['source'] = np.asarray(distributed.to_host(source)).tolist()
        record['hparams'] = {
          f: np.asarray(distributed.to_host(getattr(new_values, f))).tolist()
          for f in fields
        }
        # A copy is judged for divergence against its donor's initial loss.
        record['start_loss'] = [outcome.start_loss[i] for i in record['source']]
        record['best'] = None
        trainer.finish(job, record, save=False)
    records.append(record)
    initial_loss = record.get('start_loss')
    if 'hparams' in record:
      values = values._replace(
        **{
          f: np.asarray(v, getattr(values, f).dtype)
          for f, v in record['hparams'].items()
        }
      )
  progress.close()
  sweep_seconds = time.perf_counter() - started
  results = []
  for m in members:
    parts = [record['results'][m] for record in records]
    history = {
      key: [x for part in parts for x in part['history'][key]]
      for key in parts[-1]['history']
    }
    copied_from, copies = [], 0
    for k, part in enumerate(parts):
      source = records[k - 1]['source'][m] if k else m
      copies += source != m
      evaluations = len(part['history']['step'])
      copied_from += [source] * evaluations
      for f in explore.fields:
        history.setdefault(f'hparams.{f}', []).extend(
          [float(getattr(used[k], f)[m])] * evaluations
        )
    history['copied_from'] = copied_from
    final_config = ml_collections.ConfigDict(configs[m].to_dict())
    for f in explore.fields:  # the values it ended with, where they changed
      value = getattr(used[-1], f)[m]
      if value != np.float32(final_config[f]):
        final_config[f] = float(value)
    results.append(
      ModelResult(
        config=final_config,
        **{
          **parts[-1],
          'history': history,
          'search': {'copies': copies},
        },
      )
    )
  return _finish(
    config,
    workdir,
    dataset,
    results,
    best,
    _summary(
      len(configs),
      {
        'search': 'pbt',
        'intervals': ends,
        'explored': list(explore.fields),
        'model_steps': len(members) * static.max_iters,
      },
      sweep_seconds,
      program.compile_seconds,
      progress.done,
      fields,
      resume_from,
    ),
  )


def _events(workdir, config, configs, fresh: bool):
  """The sweep's TensorBoard events (process 0 only); a fresh sweep drops old ones."""
  if not distributed.is_writer():
    return None
  directory = workdir / tensorboard_events.DIRNAME
  if fresh:
    shutil.rmtree(directory, ignore_errors=True)
  swept = grid.swept_values(config)
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


def _summary(
  num_models: int,
  search_fields: dict,
  sweep_seconds: float,
  compile_seconds: float,
  model_examples: float,
  fields,
  resume_from,
) -> dict:
  """The summary every search writes, with its own `search_fields`.

  Args:
    num_models: the models the search trained.
    search_fields: the search's own entries (rungs, intervals, ...).
    sweep_seconds: wall seconds from the first compile to the last step.
    compile_seconds: of those, compiling.
    model_examples: model-examples trained (for the rate while training).
    fields: the hyperparameters batched along the model axis.
    resume_from: the checkpoint the run resumed from, or `None`.
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
    'resumed': resume_from is not None,
    **provenance.record(),
  }


def _finish(
  config, workdir, dataset, results, best: Best, summary: dict, events=None
) -> dict:
  """Writes the results table, the best model's params and the summary.

  Models that trained further rank first (an adaptive search's survivors),
  then by validation accuracy, then by their place in the grid.
  """
  interrupt.training_done()
  results = sorted(
    results,
    key=lambda r: (r.diverged, -r.search.get('steps', 0), -r.val_accuracy, r.index),
  )
  summary['num_diverged'] = sum(r.diverged for r in results)
  swept = results_lib.columns(grid.swept_values(config))
  if best.index is not None:
    best_result = next(r for r in results if r.index == best.index)
    summary['best'] = {
      **{f: best_result.config[f] for f in swept},
      **_seed_statistics(best_result, results, swept),
      'val_accuracy': best_result.val_accuracy,
      'test_accuracy': evaluation.split_accuracy(
        best.params, dataset.test_images, dataset.test_labels
      ),
    }
    if distributed.is_writer():
      workdir_lib.save_params(workdir / 'best_params.npz', best.params)
    best_events = (
      best.index,
      best_result.history['step'][-1],
      summary['best']['test_accuracy'],
    )
  else:
    best_events = None
    summary['best'] = None
    logging.error('Every model diverged: lower the learning rates of the sweep.')
  if events is None and config.get('search') in (*search.ADAPTIVE, 'pbt'):
    events = _search_events(workdir, results)
  if events is not None:
    events.finish({r.index: r.diverged for r in results}, best_events)
  if distributed.is_writer():
    results_lib.write(workdir, results, swept)
    workdir_lib.write_json(workdir / 'summary.json', summary)
    if config.write_plots:
      from mlp import sweep_plots

      sweep_plots.write_sweep_plots(workdir)
      if config.get('search') in (*search.ADAPTIVE, 'pbt'):
        from mlp import search_plots

        search_plots.write_search_plots(workdir)
    report.write_sweep_report(workdir)
  header, table = results_lib.tables(results, swept)['results']
  print(results_lib.markdown_table(header, table[:10]))
  logging.info(
    'Sweep of %d models done in %.1fs (compile %.1fs).',
    len(results),
    summary['sweep_seconds'],
    summary['compile_seconds'],
  )
  return summary
