"""One model trained alone, and the workdir it leaves: `api.train`, which
`--mode=train` calls.

The same engine as a search's members (`loop.Trainer`, the compiled program
of `step`, the model's own functions through `models.Model`), for one member
with nothing to search: no model axis, a checkpoint at every evaluation, and
the files below. Writes `config.json`, `metrics.jsonl` (one line per evaluation, appended as
training goes), the same curves as TensorBoard events in `tensorboard/`, `checkpoints/`, `params.npz`, `summary.json`, `report.md` and
`plots/`. A workdir that holds checkpoints of the same config is resumed from
the newest one, with bitwise the same result as an uninterrupted run.
"""

import concurrent.futures
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging

from mlp import (
  checkpoint,
  distributed,
  evaluation,
  hparams,
  interrupt,
  loop,
  models,
  provenance,
  report,
  resources,
  tensorboard_events,
)
from mlp import workdir as workdir_lib
from mlp.data import Dataset
from mlp.errors import UserError
from mlp.progress import Progress, subset

OUTPUTS = ('metrics.jsonl', 'params.npz', 'summary.json')


def run(
  config: ml_collections.ConfigDict,
  dataset: Dataset,
  workdir: str | Path,
  restart: bool = False,
  model: models.Model = models.MLP,
  started: float | None = None,
) -> dict:
  """Trains one `model` as `config` says on `dataset`; writes the workdir files.

  Args:
    config: a training config (see `configs/default.py`).
    dataset: the data.
    workdir: output directory (created if needed).
    restart: delete a previous run's outputs in `workdir` and start over.
    model: the model (`models.Model`; default the MLP).
    started: `time.perf_counter()` when the run began (before the data
      loaded), for the times it reports; default now.

  Returns:
    The summary dict (also written as `summary.json`).

  Raises:
    UserError: for a bad config or model, before anything is compiled or
      written.
  """
  started = time.perf_counter() if started is None else started
  if jax.process_count() > 1:
    raise UserError(
      '--mode=train trains one model in one process; a multi-process run is for '
      '--mode=sweep'
    )
  # Everything that can refuse the config runs before the workdir is created.
  hparams.validate(config, num_train=len(dataset.train_labels), extra=model.hyperparams)
  static = loop.static_for([config], dataset, model=model)
  values = hparams.of_config(config, model.hyperparams)
  models.check(model, [(values, static)], dataset.train_images.shape[1:])
  resources.check(static, len(dataset.val_labels), num_models=1)
  workdir = workdir_lib.prepare(workdir)
  with distributed.claim_workdir(workdir):
    return _train(config, workdir, restart, dataset, static, values, started)


class _Compiled(NamedTuple):
  """The training program and what the final evaluations need."""

  program: Any
  values: Any  # the model's hyperparameters, on the device
  final_splits: dict  # split -> (images on the device, labels)
  params_like: Any  # the params' shapes
  seconds: float


class _Fit(NamedTuple):
  """How training went: `loop.Trainer.train`'s outcome and its times."""

  outcome: Any
  start_loss: float
  train_seconds: float  # over every process of the run, as `steps`
  seconds_before: float  # of the processes this run resumes (0 when none)


def _train(
  config, workdir: Path, restart: bool, dataset, static, values, started
) -> dict:
  resume_from = checkpoint.prepare_resume(workdir, config.to_dict(), restart, OUTPUTS)
  device = loop.device_data(dataset)
  jax.block_until_ready(device)
  data_seconds = time.perf_counter() - started
  logging.info(
    'Loaded %s (%s): %d train, %d val, %d test in %.2fs.',
    config.dataset,
    config.data_source,
    len(dataset.train_labels),
    len(dataset.val_labels),
    len(dataset.test_labels),
    data_seconds,
  )
  workdir_lib.write_json(workdir / 'config.json', config.to_dict())
  compiled = _compile(static, values, dataset, device)
  fit = _fit(config, workdir, static, compiled, device, resume_from)
  finish_started = time.perf_counter()
  summary = _finish(config, workdir, dataset, static, compiled, fit, data_seconds)
  now = time.perf_counter()
  _log_done(summary, static, fit, now - started, now - finish_started)
  print(
    f'val_accuracy {summary["val_accuracy"]:.4f}  '
    f'test_accuracy {summary["test_accuracy"]:.4f}'
  )
  plots_note = f' and plots in {workdir / "plots"}/' if config.write_plots else ''
  print(f'Report: {workdir / "report.md"}{plots_note}')
  return summary


def _compile(static, values, dataset: Dataset, device) -> _Compiled:
  """Compiles the training program; the final evaluations' program (train,
  val, test in one call) compiles in a second thread beside it, so nothing
  compiles at the end."""
  model = static.model
  values = jax.device_put(values)
  final_splits = {
    'train': (device.train_images, dataset.train_labels),
    'val': (device.val_images, dataset.val_labels),
    'test': (jax.device_put(dataset.test_images), dataset.test_labels),
  }
  params_like = models.init_shapes(model, values, static)
  started = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    if model.predict is not None:
      images = {k: x for k, (x, _) in final_splits.items()}
      final_program = pool.submit(
        evaluation.compiled, params_like, images, model, static
      )
    program = loop.compile_one(static, values, device)
    if model.predict is not None:
      final_program.result()
  seconds = time.perf_counter() - started
  logging.info('Compiled the training step in %.2fs.', seconds)
  return _Compiled(program, values, final_splits, params_like, seconds)


def _fit(
  config, workdir: Path, static, compiled: _Compiled, device, resume_from
) -> _Fit:
  """Trains from scratch or from `resume_from`, appending `metrics.jsonl` and
  the TensorBoard events at every evaluation."""
  metrics_path = workdir / 'metrics.jsonl'
  progress = Progress(static.max_iters * static.batch_size)
  trainer = loop.Trainer.of_run(workdir, config, progress)
  step = trainer.resume_from(resume_from)
  events_path = workdir / tensorboard_events.DIRNAME
  seconds_before = 0.0
  if step is None:
    metrics_path.unlink(missing_ok=True)
    shutil.rmtree(events_path, ignore_errors=True)
  else:
    checkpoint.truncate_jsonl(metrics_path, step)
    seconds_before = _elapsed_before(metrics_path)
    progress.start_time -= seconds_before
    logging.info('Resuming from %s at step %d.', resume_from[0], step)
  events = tensorboard_events.RunWriter(events_path)
  if step is not None:  # events a damaged event file lost are written again
    events.backfill(_read_metrics(metrics_path))

  def on_evaluation(metrics: dict) -> None:
    metrics['epoch'] = metrics['step'] / static.iters_per_epoch
    metrics['elapsed_s'] = progress.elapsed()
    workdir_lib.append_jsonl(metrics_path, metrics)
    events.scalars(
      metrics['step'], {tag: metrics[tag] for tag in tensorboard_events.SCALARS}
    )

  outcome = trainer.train(
    'model',
    compiled.program,
    compiled.values,
    device,
    describe=_describer(static),
    on_evaluation=on_evaluation,
    stop_on_divergence=True,
  )
  interrupt.training_done()
  progress.close()
  start_loss = float(np.ravel(outcome.start_loss)[0])
  if outcome.diverged:
    last = outcome.history[-1]
    logging.error(
      'Training diverged at step %d (loss %s): %s.',
      last['step'],
      last['train_loss'],
      hparams.divergence_fix(config, math.isfinite(start_loss)),
    )
  return _Fit(outcome, start_loss, progress.elapsed(), seconds_before)


def _describer(static):
  """The progress line of an evaluation's metrics."""
  # The training accuracy of the progress lines is on the first
  # `train_eval_size` images; the final one (summary, report) on all of them.
  train_images = subset(static.train_eval_size, static.num_train)

  def describe(m: dict) -> str:
    return (
      f'step {m["step"]}/{static.max_iters} (epoch {m["step"] / static.iters_per_epoch:.1f}): '
      f'loss {m["train_loss"]:.4f}, train acc ({train_images}) {m["train_accuracy"]:.4f}, '
      f'val acc {m["val_accuracy"]:.4f}, lr {m["learning_rate"]:.3g}'
    )

  return describe


def _finish(
  config, workdir: Path, dataset, static, compiled: _Compiled, fit: _Fit, data_seconds
) -> dict:
  """The final evaluations, `params.npz`, the plots, `summary.json` and
  `report.md`; returns the summary."""
  outcome, model = fit.outcome, static.model
  accuracy = _Accuracies(outcome.state.params, compiled.final_splits, model, static)
  params = jax.device_get(outcome.state.params)
  steps = int(outcome.state.step)
  workdir_lib.save_params(workdir / 'params.npz', models.flat(params))
  if config.write_plots:
    from mlp import plots

    if model is models.MLP:
      plots.write_train_plots(workdir, dataset, accuracy.predictions)
    else:  # the weights and the predictions' plots read the MLP's params
      plots.learning_curves(
        plots.read_jsonl(workdir / 'metrics.jsonl'),
        plots.plots_directory(workdir) / 'learning_curves.png',
      )
  summary = {
    'val_accuracy': accuracy('val'),
    'test_accuracy': accuracy('test'),
    'train_accuracy': accuracy('train'),
    'final_loss': outcome.history[-1]['train_loss'],
    'start_loss': fit.start_loss,
    'diverged': outcome.diverged,
    'steps': steps,
    'num_params': sum(x.size for x in jax.tree.leaves(compiled.params_like)),
    'data_seconds': data_seconds,
    'compile_seconds': compiled.seconds,
    'train_seconds': fit.train_seconds,
    'examples_per_second': steps * static.batch_size / fit.train_seconds,
    'jax_version': jax.__version__,
    'resumed_from_step': outcome.resumed_at,
    'num_train': static.num_train,
    'train_eval_size': static.train_eval_size,
    **provenance.record(),
  }
  if fit.seconds_before:
    summary['process_train_seconds'] = fit.train_seconds - fit.seconds_before
  workdir_lib.write_json(workdir / 'summary.json', summary)
  report.write_train_report(workdir)
  return summary


def _log_done(
  summary: dict, static, fit: _Fit, total: float, finish_seconds: float
) -> None:
  """The Done line. This process's times add up to its total; a resumed
  run's training over all its processes is beside them, labelled."""
  resumed = (
    f'; training over all processes of this run, resumes included, '
    f'{fit.train_seconds:.2f}s'
    if fit.seconds_before
    else ''
  )
  logging.info(
    'Done in %.2fs (data %.2fs, compile %.2fs, train %.2fs, final evaluations, '
    'plots and report %.2fs)%s: val %.4f, test %.4f (train accuracy on %s %.4f).',
    total,
    summary['data_seconds'],
    summary['compile_seconds'],
    fit.train_seconds - fit.seconds_before,
    finish_seconds,
    resumed,
    summary['val_accuracy'],
    summary['test_accuracy'],
    subset(static.num_train, static.num_train),
    summary['train_accuracy'],
  )


class _Accuracies:
  """The final accuracy of each split: exact counts from one call of the
  predictions' program (`evaluation.evaluate`, computed while the caller goes
  on), or, for a model without `predict`, its `accuracy` over each split."""

  def __init__(self, params, splits: dict, model: models.Model, static):
    self._params, self._splits = params, splits
    self._model, self._static = model, static
    self._evaluation = None
    if model.predict is not None:
      self._evaluation = evaluation.evaluate(params, splits, model, static)

  def __call__(self, split: str) -> float:
    if self._evaluation is not None:
      return self._evaluation.accuracy(split)
    images, labels = self._splits[split]
    return evaluation.split_accuracy(
      self._params, images, labels, self._model, self._static
    )

  def predictions(self) -> np.ndarray:
    """The predicted class of every test image (the MLP's plots)."""
    return self._evaluation.predictions('test')


def _read_metrics(metrics_path: Path) -> list[dict]:
  """The evaluations in `metrics.jsonl` (NaN and infinities restored)."""
  if not metrics_path.is_file():
    return []
  return [
    workdir_lib.loads_json(line)
    for line in metrics_path.read_text().splitlines()
    if line.strip()
  ]


def _elapsed_before(metrics_path: Path) -> float:
  """Training seconds already spent, from the last line of a resumed run."""
  if not metrics_path.is_file():
    return 0.0
  lines = metrics_path.read_text().splitlines()
  return json.loads(lines[-1])['elapsed_s'] if lines else 0.0
