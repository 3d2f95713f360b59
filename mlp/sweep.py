"""`--mode=sweep`: every model of a hyperparameter grid trained at once.

The grid is grouped by the fields that change shapes (hidden size, batch size):
one compiled program per group, the training step vmapped over the model axis
(see `mlp/stacked.py`). The model axis is processed in chunks that fit in
memory and sharded across devices. After every evaluation the sweep saves a
checkpoint (finished models' results, the best params so far, and the current
chunk's state), so a killed sweep resumes where it stopped.
"""

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mlp import (
  checkpoint,
  configlib,
  distributed,
  grid,
  provenance,
  report,
  run,
  stacked,
  train,
)
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.progress import Progress

SWEEP_OUTPUTS = (
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


@dataclasses.dataclass
class Progression:
  """What a sweep has finished, and where its checkpoints go."""

  configs: list[ml_collections.ConfigDict]
  directory: Path
  keep: int
  results: dict[int, ModelResult] = dataclasses.field(default_factory=dict)
  best_index: int | None = None
  best_params: dict | None = None
  partial: dict | None = None  # the chunk in progress at the last checkpoint
  partial_path: Path | None = None
  sequence: int = 0

  def record(self, result: ModelResult, params_of: callable) -> None:
    self.results[result.index] = result
    best = self.results.get(self.best_index)
    if not result.diverged and (
      best is None or result.val_accuracy > best.val_accuracy
    ):
      self.best_index, self.best_params = result.index, params_of()
      if distributed.is_writer():
        self.directory.mkdir(exist_ok=True)
        workdir_lib.save_params(self.directory / 'best_params.npz', self.best_params)

  def save(self, state=None, partial: dict | None = None) -> None:
    """A checkpoint: finished results, and the chunk in progress (if any)."""
    self.sequence += 1
    metadata = {
      'results': [r.to_json() for r in self.results.values()],
      'best_index': self.best_index,
      'partial': partial,
    }
    checkpoint.save(
      self.directory,
      self.sequence,
      {} if state is None else state,
      metadata,
      keep=self.keep,
    )

  @classmethod
  def resume(cls, path: Path, configs, directory: Path, keep: int) -> 'Progression':
    metadata = checkpoint.read_metadata(path)
    progression = cls(configs, directory, keep, sequence=int(path.stem[5:]))
    for r in metadata['results']:
      progression.results[r['index']] = ModelResult(config=configs[r['index']], **r)
    progression.best_index = metadata['best_index']
    if progression.best_index is not None:
      progression.best_params = workdir_lib.load_params(directory / 'best_params.npz')
    progression.partial, progression.partial_path = metadata['partial'], path
    return progression


def _model_params(params: dict, i: int) -> dict:
  """Model `i`'s params from a stacked pytree, on the host."""
  return distributed.to_host(jax.tree.map(lambda x: x[i], params))


def _chunk_results(chunk, indices, history, finite) -> list[ModelResult]:
  curves = {
    k: np.stack([np.asarray(h[k]) for h in history], axis=1) for k in history[0]
  }
  results = []
  for i, config in enumerate(chunk):
    loss = float(curves['train_loss'][i, -1])
    results.append(
      ModelResult(
        index=indices[i],
        config=config,
        val_accuracy=float(curves['val_accuracy'][i, -1]),
        train_accuracy=float(curves['train_accuracy'][i, -1]),
        final_loss=loss,
        diverged=not (math.isfinite(loss) and bool(finite[i])),
        history={k: v[i].tolist() for k, v in curves.items()},
      )
    )
  return results


def train_group(
  indices: list[int],
  static: train.Static,
  device: train.DeviceData,
  mesh: jax.sharding.Mesh,
  fields: tuple[str, ...],
  chunk_size: int,
  progress: Progress,
  progression: Progression,
) -> float:
  """Trains one shape group, chunk by chunk, with one compiled program.

  Args:
    indices: the group's places in the grid.
    static: the group's shapes (`max_iters` is the group's longest run).
    device: the device-resident data, replicated over `mesh`.
    mesh: a 1-D mesh with axis `models`.
    fields: the batched hyperparameter fields.
    chunk_size: models per call, a multiple of the mesh size.
    progress: shared progress counter (in model-examples).
    progression: finished results and checkpoints; updated.

  Returns:
    The seconds spent compiling.
  """
  configs = progression.configs
  _, axes = stacked.stacked_hyperparams([configs[indices[0]]], fields)
  init, segment = stacked.vmapped_functions(static, axes, mesh)
  compile_seconds, compiled = 0.0, False
  for start in range(0, len(indices), chunk_size):
    chunk_indices = indices[start : start + chunk_size]
    chunk = [configs[i] for i in chunk_indices]
    examples = len(chunk) * static.max_iters * static.batch_size
    if all(i in progression.results for i in chunk_indices):
      progress.done += examples
      continue
    padded = chunk + [chunk[-1]] * (chunk_size - len(chunk))  # one shape, one compile
    hparams = stacked.put_models(
      stacked.stacked_hyperparams(padded, fields)[0], mesh, axes
    )
    if not compiled:
      t0 = time.perf_counter()
      init = init.lower(hparams).compile()
      segment = segment.lower(init(hparams), hparams, device, jnp.int32(0)).compile()
      compile_seconds, compiled = time.perf_counter() - t0, True
      progress.start_time += compile_seconds  # rates count training time only
    state, history = init(hparams), []
    partial = progression.partial
    if partial is not None and partial['indices'] == chunk_indices:
      restored, _ = checkpoint.restore(progression.partial_path, like=state)
      state = jax.tree.map(
        lambda x, like: distributed.put(x, like.sharding), restored, state
      )
      history = partial['history']
      progress.done += len(chunk) * partial['step'] * static.batch_size
      logging.info('Resuming models %s at step %d.', chunk_indices, partial['step'])
    previous_end = int(state.step)
    for end in train.segment_ends(static):
      if end <= previous_end:
        continue
      state, metrics = segment(state, hparams, device, jnp.int32(end))
      metrics = train.exact_accuracies(
        distributed.to_host(metrics), static, device.val_labels.shape[0]
      )
      history.append({k: v.tolist() for k, v in metrics.items()})
      progression.save(
        state, {'indices': chunk_indices, 'step': int(end), 'history': history}
      )
      progress.done += len(chunk) * (end - previous_end) * static.batch_size
      previous_end = int(end)
      progress.log(
        progress.done,
        'H %d, models %d-%d: step %d/%d, best val acc %.4f',
        static.hidden_size,
        chunk_indices[0] + 1,
        chunk_indices[-1] + 1,
        end,
        static.max_iters,
        np.nanmax(metrics['val_accuracy']),
      )
    finite = stacked.finite_per_model(state.params)
    for i, result in enumerate(_chunk_results(chunk, chunk_indices, history, finite)):
      progression.record(result, lambda i=i, p=state.params: _model_params(p, i))
    progression.save()
  return compile_seconds


def run_sweep(
  config: ml_collections.ConfigDict, workdir: str, restart: bool = False
) -> dict:
  """Trains every model of `config.sweep` and writes the sweep's workdir files.

  Writes `config.json`, `results.csv`, `results.md` (sorted by validation
  accuracy), `curves.jsonl` (each model's learning curves), `summary.json`,
  `best_params.npz`, and `checkpoints/` (resumed when the same command runs
  again).

  Args:
    config: a sweep config (see `configs/sweep.py`).
    workdir: output directory.
    restart: delete a previous sweep's outputs in `workdir` and start over.

  Returns:
    The summary dict.
  """
  points = grid.points(config)
  configs = [grid.model_config(config, p) for p in points]
  workdir = workdir_lib.prepare(workdir)
  resume_from = checkpoint.prepare_resume(
    workdir, config.to_dict(), restart, SWEEP_OUTPUTS
  )
  dataset = run.load_data(config)
  num_train = len(dataset.train_labels)
  for c in configs:
    configlib.validate(c, num_train=num_train)
  if distributed.is_writer():
    workdir_lib.write_json(workdir / 'config.json', config.to_dict())
  directory = workdir / checkpoint.DIRNAME
  if resume_from is None:
    progression = Progression(configs, directory, config.keep_checkpoints)
  else:
    progression = Progression.resume(
      resume_from, configs, directory, config.keep_checkpoints
    )
    logging.info(
      'Resuming from %s: %d of %d models done.',
      resume_from,
      len(progression.results),
      len(configs),
    )

  devices = jax.devices()
  mesh = stacked.model_mesh()
  device = stacked.replicated_data(dataset, mesh)
  fields = stacked.batched_fields(configs)
  groups: dict[tuple, list[int]] = {}
  for i, c in enumerate(configs):
    groups.setdefault((c.hidden_size, c.batch_size), []).append(i)
  statics = {
    key: configlib.static(
      configs[idx[0]],
      num_train,
      dataset.train_images.shape[1],
      dataset.num_classes,
      max_iters=max(configs[i].num_iters for i in idx),
      group=[configs[i] for i in idx],
    )
    for key, idx in groups.items()
  }
  total = sum(
    len(idx) * statics[k].max_iters * statics[k].batch_size for k, idx in groups.items()
  )
  progress = Progress(total, unit='model-examples')
  logging.info(
    'Sweep of %d models in %d shape group(s) on %d %s device(s); batched fields: %s.',
    len(configs),
    len(groups),
    len(devices),
    jax.default_backend(),
    ', '.join(fields),
  )

  compile_seconds = 0.0
  t0 = time.perf_counter()
  for key, idx in groups.items():
    static = statics[key]
    chunk = min(
      stacked.models_per_chunk(config, static, len(dataset.val_labels), len(devices)),
      math.ceil(len(idx) / len(devices)) * len(devices),
    )
    compile_seconds += train_group(
      idx, static, device, mesh, fields, chunk, progress, progression
    )
  progress.close()
  sweep_seconds = time.perf_counter() - t0
  return _finish(
    config,
    workdir,
    dataset,
    progression,
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


def _finish(config, workdir, dataset, progression: Progression, summary: dict) -> dict:
  """Writes the results table, the best model's params and the summary."""
  results = sorted(
    progression.results.values(), key=lambda r: (r.diverged, -r.val_accuracy, r.index)
  )
  summary['num_diverged'] = sum(r.diverged for r in results)
  swept = results_lib.columns(grid.swept_values(config))
  if progression.best_index is not None:
    best = progression.results[progression.best_index]
    params = progression.best_params
    summary['best'] = {
      **{f: best.config[f] for f in swept},
      'val_accuracy': best.val_accuracy,
      'test_accuracy': run.split_accuracy(
        params, dataset.test_images, dataset.test_labels
      ),
    }
    if distributed.is_writer():
      workdir_lib.save_params(workdir / 'best_params.npz', params)
  else:
    summary['best'] = None
    logging.error('Every model diverged: lower the learning rates of the sweep.')
  if distributed.is_writer():
    results_lib.write(workdir, results, swept)
    workdir_lib.write_json(workdir / 'summary.json', summary)
    if config.write_plots:
      from mlp import (
        sweep_plots,
      )  # matplotlib takes a few tenths of a second to import.

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
