"""`--mode=sweep`: every model of a hyperparameter grid trained at once.

The grid (`grid.points`) is grouped by the fields that change shapes (hidden
size, batch size): one compiled program per group, whose per-model
hyperparameters are stacked along a model axis. Each group is trained in
chunks that fit in memory, padded to a multiple of the device count and
sharded across devices (and hosts). Every chunk is a job of the training loop
(`loop.Trainer`), so a killed sweep resumes where it stopped.
"""

import dataclasses
import math
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
  loop,
  model_axis,
  provenance,
  report,
  resources,
)
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.progress import Progress

OUTPUTS = (
  'results.csv',
  'results.md',
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

  def offer(self, result: ModelResult, best_so_far: ModelResult | None, params_of):
    """Keeps `result` if it beats the best so far: higher val accuracy, or the
    same and an earlier place in the grid (as `results.csv` ranks them)."""
    if result.diverged or (
      best_so_far is not None
      and (result.val_accuracy, -result.index)
      <= (best_so_far.val_accuracy, -best_so_far.index)
    ):
      return
    self.index, self.params = result.index, params_of()


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
  points = grid.points(config)
  configs = [grid.model_config(config, p) for p in points]
  for c in configs:
    hparams.validate(c)
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
  for static in statics.values():
    resources.check(static, len(dataset.val_labels), num_models=1)
  workdir = workdir_lib.prepare(workdir)
  with distributed.claim_workdir(workdir):
    return _sweep(config, workdir, restart, configs, dataset, groups, statics)


def _sweep(config, workdir, restart, configs, dataset, groups, statics) -> dict:
  resume_from = checkpoint.prepare_resume(workdir, config.to_dict(), restart, OUTPUTS)
  if distributed.is_writer():
    workdir_lib.write_json(workdir / 'config.json', config.to_dict())

  # Fields that vary anywhere in the grid are stacked in every chunk, so that
  # the chunks of a group share one program.
  fields = hparams.varying([hparams.of_config(c) for c in configs])
  devices = jax.devices()
  mesh = model_axis.model_mesh()
  device = model_axis.replicated_data(dataset, mesh)
  total = sum(
    len(idx) * statics[k].max_iters * statics[k].batch_size for k, idx in groups.items()
  )
  progress = Progress(total, unit='model-examples')
  trainer = loop.Trainer(
    workdir / checkpoint.DIRNAME,
    config.checkpoint_every,
    config.keep_checkpoints,
    progress,
    config=config.to_dict(),
  )
  trainer.resume_from(resume_from)
  results = {
    r['index']: ModelResult(config=configs[r['index']], **r)
    for job in trainer.finished.values()
    for r in job['results']
  }
  jobs = list(trainer.finished.values())
  kept = {k.removeprefix('best/'): v for k, v in trainer.kept.items()}
  best = Best(jobs[-1]['best'] if jobs else None, kept or None)
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
  started = time.perf_counter()
  for key, idx in groups.items():
    static = statics[key]
    chunk_size = min(
      model_axis.models_per_chunk(
        config, static, len(dataset.val_labels), len(devices)
      ),
      math.ceil(len(idx) / len(devices)) * len(devices),
    )
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
        program = loop.compile_many(static, values, axes, device, mesh)
        compile_seconds += program.compile_seconds
        progress.start_time += program.compile_seconds  # rates count training only

      def describe(metrics, static=static, chunk_indices=chunk_indices):
        return (
          f'H {static.hidden_size}, models {chunk_indices[0] + 1}-'
          f'{chunk_indices[-1] + 1}: step {max(metrics["step"])}/{static.max_iters}, '
          f'best val acc {np.nanmax(metrics["val_accuracy"]):.4f}'
        )

      outcome = trainer.train(
        job, program, values, device, describe=describe, num_models=len(chunk)
      )
      chunk_results = _chunk_results(chunk, chunk_indices, outcome)
      for i, result in enumerate(chunk_results):
        best.offer(
          result,
          results.get(best.index),
          lambda i=i, p=outcome.state.params: distributed.to_host(
            jax.tree.map(lambda x: x[i], p)
          ),
        )
        results[result.index] = result
      trainer.finish(
        job,
        {'results': [r.to_json() for r in chunk_results], 'best': best.index},
        kept={f'best/{k}': v for k, v in (best.params or {}).items()},
      )
  progress.close()
  sweep_seconds = time.perf_counter() - started
  return _finish(
    config,
    workdir,
    dataset,
    list(results.values()),
    best,
    {
      'num_models': len(configs),
      'sweep_seconds': sweep_seconds,
      'compile_seconds': compile_seconds,
      'model_examples_per_second': total / max(sweep_seconds - compile_seconds, 1e-9),
      'batched_fields': list(fields),
      'jax_version': jax.__version__,
      'resumed': resume_from is not None,
      **provenance.record(),
    },
  )


def _finish(config, workdir, dataset, results, best: Best, summary: dict) -> dict:
  """Writes the results table, the best model's params and the summary."""
  results = sorted(results, key=lambda r: (r.diverged, -r.val_accuracy, r.index))
  summary['num_diverged'] = sum(r.diverged for r in results)
  swept = results_lib.columns(grid.swept_values(config))
  if best.index is not None:
    best_result = next(r for r in results if r.index == best.index)
    summary['best'] = {
      **{f: best_result.config[f] for f in swept},
      'val_accuracy': best_result.val_accuracy,
      'test_accuracy': evaluation.split_accuracy(
        best.params, dataset.test_images, dataset.test_labels
      ),
    }
    if distributed.is_writer():
      workdir_lib.save_params(workdir / 'best_params.npz', best.params)
  else:
    summary['best'] = None
    logging.error('Every model diverged: lower the learning rates of the sweep.')
  if distributed.is_writer():
    results_lib.write(workdir, results, swept)
    workdir_lib.write_json(workdir / 'summary.json', summary)
    if config.write_plots:
      from mlp import sweep_plots  # matplotlib takes a few tenths of a second.

      sweep_plots.write_sweep_plots(workdir)
    report.write_sweep_report(workdir)
  print(results_lib.markdown_table(results[:10], swept))
  logging.info(
    'Sweep of %d models done in %.1fs (compile %.1fs).',
    len(results),
    summary['sweep_seconds'],
    summary['compile_seconds'],
  )
  return summary
