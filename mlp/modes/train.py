"""`--mode=train`: the training loop with one model, and the workdir it leaves.

Writes `config.json`, `metrics.jsonl` (one line per evaluation, appended as
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

import jax
import ml_collections
import numpy as np
from absl import logging

from mlp import (
  checkpoint,
  data,
  distributed,
  evaluation,
  hparams,
  interrupt,
  loop,
  model,
  provenance,
  report,
  resources,
  tensorboard_events,
)
from mlp import workdir as workdir_lib
from mlp.errors import UserError
from mlp.progress import Progress

OUTPUTS = ('metrics.jsonl', 'params.npz', 'summary.json')


def run(config: ml_collections.ConfigDict, workdir: str, restart: bool = False) -> dict:
  """Trains one model as `config` says and writes the workdir files.

  Args:
    config: a training config (see `configs/default.py`).
    workdir: output directory (created if needed).
    restart: delete a previous run's outputs in `workdir` and start over.

  Returns:
    The summary dict (also written as `summary.json`).
  """
  started = time.perf_counter()
  if jax.process_count() > 1:
    raise UserError(
      '--mode=train trains one model in one process; a multi-process run is for '
      '--mode=sweep'
    )
  hparams.validate(config)
  if config.write_plots:
    # matplotlib takes a few tenths of a second to import: meanwhile, load.
    report.prefetch('mlp.plots')
  # Everything that can refuse the config runs before the workdir is created.
  dataset = data.from_config(config)
  hparams.validate(config, num_train=len(dataset.train_labels))
  static = loop.static_for([config], dataset)
  resources.check(static, len(dataset.val_labels), num_models=1)
  workdir = workdir_lib.prepare(workdir)
  with distributed.claim_workdir(workdir):
    return _train(config, workdir, restart, dataset, static, started)


def _train(config, workdir: Path, restart: bool, dataset, static, started) -> dict:
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

  values = jax.device_put(hparams.of_config(config))
  # The final evaluations' program (train, val, test in one call) compiles in
  # a second thread, beside the training program: nothing compiles at the end.
  final_splits = {
    'train': (device.train_images, dataset.train_labels),
    'val': (device.val_images, dataset.val_labels),
    'test': (jax.device_put(dataset.test_images), dataset.test_labels),
  }
  params_like = jax.eval_shape(
    lambda: model.init_params(
      jax.random.key(0),
      static.input_size,
      static.hidden_size,
      static.num_classes,
      1.0,
      static.init,
    )
  )
  compile_started = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    final_program = pool.submit(
      evaluation.compiled, params_like, {k: x for k, (x, _) in final_splits.items()}
    )
    program = loop.compile_one(static, values, device)
    final_program.result()
  compile_seconds = time.perf_counter() - compile_started
  logging.info('Compiled the training step in %.2fs.', compile_seconds)

  metrics_path = workdir / 'metrics.jsonl'
  progress = Progress(static.max_iters * static.batch_size)
  trainer = loop.Trainer.of_run(workdir, config, progress)
  step = trainer.resume_from(resume_from)
  events_path = workdir / tensorboard_events.DIRNAME
  if step is None:
    metrics_path.unlink(missing_ok=True)
    shutil.rmtree(events_path, ignore_errors=True)
  else:
    checkpoint.truncate_jsonl(metrics_path, step)
    progress.start_time -= _elapsed_before(metrics_path)
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

  def describe(m: dict) -> str:
    return (
      f'step {m["step"]}/{static.max_iters} (epoch {m["step"] / static.iters_per_epoch:.1f}): '
      f'loss {m["train_loss"]:.4f}, train acc {m["train_accuracy"]:.4f}, '
      f'val acc {m["val_accuracy"]:.4f}, lr {m["learning_rate"]:.3g}'
    )

  outcome = trainer.train(
    'model',
    program,
    values,
    device,
    describe=describe,
    on_evaluation=on_evaluation,
    stop_on_divergence=True,
  )
  interrupt.training_done()
  progress.close()
  train_seconds = progress.elapsed()
  last = outcome.history[-1]
  start_loss = float(np.ravel(outcome.start_loss)[0])
  if outcome.diverged:
    logging.error(
      'Training diverged at step %d (loss %s): %s.',
      last['step'],
      last['train_loss'],
      hparams.divergence_fix(config, math.isfinite(start_loss)),
    )

  finish_started = time.perf_counter()
  final = evaluation.evaluate(outcome.state.params, final_splits)  # runs meanwhile
  params = jax.device_get(outcome.state.params)
  steps = int(outcome.state.step)
  workdir_lib.save_params(workdir / 'params.npz', params)
  if config.write_plots:
    from mlp import plots

    plots.write_train_plots(workdir, dataset, lambda: final.predictions('test'))
  summary = {
    'val_accuracy': final.accuracy('val'),
    'test_accuracy': final.accuracy('test'),
    'train_accuracy': final.accuracy('train'),
    'final_loss': last['train_loss'],
    'start_loss': start_loss,
    'diverged': outcome.diverged,
    'steps': steps,
    'num_params': model.num_params(params),
    'data_seconds': data_seconds,
    'compile_seconds': compile_seconds,
    'train_seconds': train_seconds,
    'examples_per_second': steps * static.batch_size / train_seconds,
    'jax_version': jax.__version__,
    'resumed_from_step': outcome.resumed_at,
    **provenance.record(),
  }
  workdir_lib.write_json(workdir / 'summary.json', summary)
  report.write_train_report(workdir)
  logging.info(
    'Done in %.2fs (data %.2fs, compile %.2fs, train %.2fs, final evaluations, '
    'plots and report %.2fs): val %.4f, test %.4f.',
    time.perf_counter() - started,
    data_seconds,
    compile_seconds,
    train_seconds,
    time.perf_counter() - finish_started,
    summary['val_accuracy'],
    summary['test_accuracy'],
  )
  print(
    f'val_accuracy {summary["val_accuracy"]:.4f}  '
    f'test_accuracy {summary["test_accuracy"]:.4f}'
  )
  plots_note = f' and plots in {workdir / "plots"}/' if config.write_plots else ''
  print(f'Report: {workdir / "report.md"}{plots_note}')
  return summary


def divergence_message(config: ml_collections.ConfigDict, summary: dict) -> str:
  """The `Error:` line of a run that diverged: its loss and the field to lower."""
  start_loss = summary['start_loss']
  fix = hparams.divergence_fix(
    config, start_loss is not None and math.isfinite(start_loss)
  )
  return (
    f'training diverged (loss {summary["final_loss"]}) after {summary["steps"]} '
    f'steps: {fix}'
  )


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
