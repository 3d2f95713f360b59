"""`--mode=train` and `--mode=eval`: load data, train, evaluate, write the workdir.

Training is a Python loop over evaluation segments, each one call of the same
compiled `train.train_segment` (one compile for the whole run): between two
calls the driver logs a progress line and appends to `metrics.jsonl`.
"""

import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mlp import checkpoint, configlib, data, model, provenance, report, train
from mlp import workdir as workdir_lib
from mlp.errors import UserError
from mlp.progress import Progress


def load_data(config: ml_collections.ConfigDict) -> data.Dataset:
  """The dataset a config names (validated, with a clear error if unreadable)."""
  return data.load_dataset(
    name=config.dataset,
    source=config.data_source,
    data_dir=config.data_dir,
    num_val=config.num_val,
    download_url=config.data_url or None,
  )


def device_data(dataset: data.Dataset) -> train.DeviceData:
  """Puts the train and val splits on the default device, images as uint8."""
  return train.DeviceData(
    *jax.device_put(
      (
        dataset.train_images,
        dataset.train_labels,
        dataset.val_images,
        dataset.val_labels,
      )
    )
  )


# Examples per accuracy call: every split is cut into pieces of this size (the
# last one padded), so one compiled program serves val, test and train.
EVAL_CHUNK = 5000


@jax.jit
def _count_correct(params, images, labels):
  """Correct predictions in one chunk (labels -1 mark padding)."""
  logits = model.apply(params, data.scale_images(images))
  return jnp.sum(jnp.argmax(logits, -1) == labels)


def split_accuracy(
  params: model.Params, images: np.ndarray, labels: np.ndarray
) -> float:
  """Accuracy of `params` on a whole split (uint8 images `(N, D)`)."""
  params = jax.device_put(params)
  counts = []
  for start in range(0, len(labels), EVAL_CHUNK):
    x, y = images[start : start + EVAL_CHUNK], labels[start : start + EVAL_CHUNK]
    pad = EVAL_CHUNK - len(y)
    if pad:
      x = np.pad(x, ((0, pad), (0, 0)))
      y = np.pad(y, (0, pad), constant_values=-1)
    counts.append(_count_correct(params, x, y))
  return sum(int(c) for c in counts) / len(labels)


def abstract(tree):
  """`jax.ShapeDtypeStruct`s of a pytree of arrays (for ahead-of-time compiles)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


@functools.lru_cache(maxsize=8)
def compiled_functions(
  static: train.Static, hparams: train.Hyperparams, data: train.DeviceData
):
  """`init_state` and `train_segment` compiled for these shapes, once per process.

  Args:
    static: shapes and structure.
    hparams: abstract (`jax.ShapeDtypeStruct`) hyperparameters.
    data: abstract device data.

  Returns:
    The compiled `init(hparams)` and `segment(state, hparams, data, end_step)`.
  """
  init = jax.jit(train.init_state, static_argnames='static')
  state = jax.eval_shape(functools.partial(train.init_state, static=static), hparams)
  segment = jax.jit(
    train.train_segment,
    static_argnames='static',
    donate_argnums=0,
    compiler_options=train.compiler_options(static.compute_dtype),
  )
  end_step = jax.ShapeDtypeStruct((), jnp.int32)
  return (
    init.lower(hparams, static=static).compile(),
    segment.lower(state, hparams, data, static=static, end_step=end_step).compile(),
  )


def _elapsed_before(metrics_path: Path) -> float:
  """Training seconds already spent, from the last line of a resumed run."""
  if not metrics_path.is_file():
    return 0.0
  lines = metrics_path.read_text().splitlines()
  return json.loads(lines[-1])['elapsed_s'] if lines else 0.0


def _to_python(metrics: dict, static: train.Static, num_val: int) -> dict:
  metrics = train.exact_accuracies(jax.device_get(metrics), static, num_val)
  return {k: v.item() for k, v in metrics.items()}


TRAIN_OUTPUTS = ('metrics.jsonl', 'params.npz', 'summary.json')


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, restart: bool = False
) -> dict:
  """Trains one model as `config` says and writes the workdir files.

  Writes `config.json`, `metrics.jsonl` (one line per evaluation),
  `checkpoints/`, `params.npz` and `summary.json`. A workdir that already
  holds checkpoints of the same config is resumed from the newest one, with
  bitwise the same result as an uninterrupted run.

  Args:
    config: a training config (see `configs/default.py`).
    workdir: output directory (created if needed).
    restart: delete a previous run's outputs in `workdir` and start over.

  Returns:
    The summary dict.
  """
  configlib.validate(config)
  workdir = workdir_lib.prepare(workdir)
  resume_from = checkpoint.prepare_resume(
    workdir, config.to_dict(), restart, TRAIN_OUTPUTS
  )
  t0 = time.perf_counter()
  dataset = load_data(config)
  configlib.validate(config, num_train=len(dataset.train_labels))
  device = device_data(dataset)
  jax.block_until_ready(device)
  data_seconds = time.perf_counter() - t0
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

  static = configlib.static(
    config,
    len(dataset.train_labels),
    dataset.train_images.shape[1],
    dataset.num_classes,
  )
  hparams = jax.device_put(configlib.hyperparams(config))
  t0 = time.perf_counter()
  init, segment = compiled_functions(static, abstract(hparams), abstract(device))
  state = init(hparams)
  compile_seconds = time.perf_counter() - t0
  logging.info('Compiled the training step in %.2fs.', compile_seconds)

  metrics_path = workdir / 'metrics.jsonl'
  checkpoints = workdir / checkpoint.DIRNAME
  if resume_from is None:
    metrics_path.unlink(missing_ok=True)
  else:
    state, _ = checkpoint.restore(resume_from, like=state)
    state = jax.device_put(state)
    checkpoint.truncate_jsonl(metrics_path, int(state.step))
    logging.info('Resuming from %s at step %d.', resume_from, int(state.step))
  progress = Progress(static.max_iters * static.batch_size)
  progress.start_time -= _elapsed_before(metrics_path)
  diverged = False
  metrics = None
  last_saved = int(state.step)
  for end_step in train.segment_ends(static):
    if end_step <= int(state.step):
      continue
    state, metrics = segment(state, hparams, device, end_step=jnp.int32(end_step))
    metrics = _to_python(metrics, static, len(dataset.val_labels))
    metrics['epoch'] = metrics['step'] / static.iters_per_epoch
    metrics['elapsed_s'] = progress.elapsed()
    workdir_lib.append_jsonl(metrics_path, metrics)
    if end_step - last_saved >= config.checkpoint_every or end_step == static.max_iters:
      checkpoint.save(
        checkpoints,
        int(end_step),
        state,
        {'step': int(end_step)},
        keep=config.keep_checkpoints,
      )
      last_saved = int(end_step)
    progress.log(
      metrics['step'] * static.batch_size,
      'step %d/%d (epoch %.1f): loss %.4f, train acc %.4f, val acc %.4f, lr %.3g',
      metrics['step'],
      static.max_iters,
      metrics['epoch'],
      metrics['train_loss'],
      metrics['train_accuracy'],
      metrics['val_accuracy'],
      metrics['learning_rate'],
    )
    if not math.isfinite(metrics['train_loss']):
      progress.close()
      diverged = True
      logging.error(
        'Training diverged at step %d (loss %s): lower learning_rate (now %g).',
        metrics['step'],
        metrics['train_loss'],
        config.learning_rate,
      )
      break
  progress.close()
  train_seconds = progress.elapsed()
  steps = int(state.step)
  if metrics is None:  # Resumed a finished run: its last evaluation stands.
    metrics = json.loads(metrics_path.read_text().splitlines()[-1])

  params = jax.device_get(state.params)
  summary = {
    'val_accuracy': split_accuracy(params, dataset.val_images, dataset.val_labels),
    'test_accuracy': split_accuracy(params, dataset.test_images, dataset.test_labels),
    'train_accuracy': split_accuracy(
      params, dataset.train_images, dataset.train_labels
    ),
    'final_loss': metrics['train_loss'],
    'diverged': diverged,
    'steps': steps,
    'num_params': model.num_params(params),
    'data_seconds': data_seconds,
    'compile_seconds': compile_seconds,
    'train_seconds': train_seconds,
    'examples_per_second': steps * static.batch_size / train_seconds,
    'jax_version': jax.__version__,
    'resumed_from_step': None if resume_from is None else int(resume_from.stem[5:]),
    **provenance.record(),
  }
  workdir_lib.save_params(workdir / 'params.npz', params)
  workdir_lib.write_json(workdir / 'summary.json', summary)
  if config.write_plots:
    from mlp import plots  # matplotlib takes a few tenths of a second to import.

    plots.write_train_plots(workdir, dataset)
  report.write_train_report(workdir)
  logging.info(
    'Done in %.2fs (data %.2fs, compile %.2fs, train %.2fs): val %.4f, test %.4f.',
    data_seconds + compile_seconds + train_seconds,
    data_seconds,
    compile_seconds,
    train_seconds,
    summary['val_accuracy'],
    summary['test_accuracy'],
  )
  print(
    f'val_accuracy {summary["val_accuracy"]:.4f}  test_accuracy {summary["test_accuracy"]:.4f}'
  )
  return summary


def evaluate_workdir(config: ml_collections.ConfigDict | None, workdir: str) -> dict:
  """`--mode=eval`: test (and val) accuracy of the params saved in `workdir`.

  Args:
    config: the config to take the dataset from; `None` reads the workdir's
      `config.json`.
    workdir: a directory written by `--mode=train`.

  Returns:
    `{'val_accuracy', 'test_accuracy', 'hidden_size'}`.
  """
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise UserError(
      f'workdir {workdir} does not exist: train first with --mode=train --workdir={workdir}'
    )
  params = workdir_lib.load_params(workdir / 'params.npz')
  if config is None:
    config_path = workdir / 'config.json'
    if not config_path.is_file():
      raise UserError(f'no config.json in {workdir}: pass --config=configs/NAME.py')
    config = ml_collections.ConfigDict(workdir_lib.read_json(config_path))
  dataset = load_data(config)
  expected = {'W1': 2, 'b1': 1, 'W2': 2, 'b2': 1}
  shapes_ok = set(params) == set(expected) and all(
    params[k].ndim == n for k, n in expected.items()
  )
  input_size = dataset.train_images.shape[1]
  if (
    not shapes_ok
    or params['W1'].shape[0] != input_size
    or params['W2'].shape[1] != dataset.num_classes
  ):
    shapes = {k: v.shape for k, v in params.items()}
    raise UserError(
      f'params in {workdir} do not fit {config.dataset} (shapes {shapes}, need W1 '
      f'({input_size}, H) and W2 (H, {dataset.num_classes})): train again with --mode=train'
    )
  result = {
    'hidden_size': int(params['W1'].shape[1]),
    'val_accuracy': split_accuracy(params, dataset.val_images, dataset.val_labels),
    'test_accuracy': split_accuracy(params, dataset.test_images, dataset.test_labels),
  }
  print(
    f'val_accuracy {result["val_accuracy"]:.4f}  test_accuracy {result["test_accuracy"]:.4f}'
  )
  return result
