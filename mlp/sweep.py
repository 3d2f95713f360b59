"""`--mode=sweep`: every model of a hyperparameter grid trained at once.

The grid is grouped by the fields that change shapes (hidden size, batch size):
one compiled program per group, `jax.vmap` of `train.train_segment` over the
model axis. Array hyperparameters that are the same for every model stay
unbatched, so models that share a seed share their mini-batches (common random
numbers), and one gathered batch feeds them all. The model axis is processed in
chunks that fit in memory and sharded across devices (mesh axis `models`).
"""

import dataclasses
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from mlp import configlib, grid, run, train
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.progress import Progress

# Every state leaf keeps its model axis first, except the shared step counter.
# (Measured: putting W1's model axis in the middle, to make `x @ W1` one wide
# matmul, is no faster on CPU: per-model broadcasts of the learning rate move
# the axis back to the front.)
STATE_AXES = train.TrainState(params=0, opt_state=0, step=None, train_loss=0)


def _sharding(mesh: jax.sharding.Mesh, axis: int | None) -> NamedSharding:
  """The model axis (at position `axis`) split over the mesh axis `models`."""
  if axis is None:
    return NamedSharding(mesh, PartitionSpec())
  return NamedSharding(mesh, PartitionSpec(*[None] * axis, 'models'))


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


def batched_fields(configs: list[ml_collections.ConfigDict]) -> tuple[str, ...]:
  """Array fields that differ across the grid (the others stay unbatched)."""
  fields = tuple(f for f in grid.ARRAY_FIELDS if len({c[f] for c in configs}) > 1)
  return fields or ('learning_rate',)  # vmap needs one batched input.


def stacked_hyperparams(
  configs: list[ml_collections.ConfigDict], fields: tuple[str, ...]
) -> tuple[train.Hyperparams, train.Hyperparams]:
  """Hyperparams with `fields` stacked along axis 0, and the matching in_axes."""
  each = [configlib.hyperparams(c) for c in configs]
  values, axes = {}, {}
  for name in train.Hyperparams._fields:
    if name in fields:
      values[name], axes[name] = np.stack([getattr(h, name) for h in each]), 0
    else:
      values[name], axes[name] = getattr(each[0], name), None
  return train.Hyperparams(**values), train.Hyperparams(**axes)


def vmapped_functions(
  static: train.Static, hparam_axes: train.Hyperparams, mesh: jax.sharding.Mesh
):
  """Jitted `init` and `segment` over a model axis sharded across `mesh`.

  The state's model axis is pinned to the mesh axis `models` on output, so
  every call sees the same shardings (XLA would otherwise replicate params
  that are initialised from unbatched inputs).
  """
  axes = STATE_AXES
  init = jax.vmap(
    functools.partial(train.init_state, static=static),
    in_axes=(hparam_axes,),
    out_axes=axes,
  )

  def segment(state, hparams, data, end_step):
    return train.train_segment(
      state, hparams, data, static, end_step, model_axes=(axes, hparam_axes)
    )

  by_model = _sharding(mesh, 0)
  state_sharding = train.TrainState(
    params=by_model, opt_state=by_model, step=_sharding(mesh, None), train_loss=by_model
  )
  return (
    jax.jit(init, out_shardings=state_sharding),
    jax.jit(segment, donate_argnums=0, out_shardings=(state_sharding, by_model)),
  )


def _is_axis(x) -> bool:
  return x is None or isinstance(x, int)


def models_per_chunk(
  config, static: train.Static, num_val: int, num_devices: int
) -> int:
  """How many models train at once: `config.models_per_chunk`, or what fits.

  The estimate counts each model's params, gradients and optimizer state, its
  activations for a batch, and its evaluation activations, against half the
  device's memory (a quarter of host RAM on CPU).
  """
  if config.get('models_per_chunk', 0) > 0:
    chunk = config.models_per_chunk
  else:
    h, d, c = static.hidden_size, static.input_size, static.num_classes
    params = d * h + h + h * c + c
    activations = static.batch_size * (d + 3 * h + 3 * c)
    evaluation = (static.train_eval_size + num_val) * (h + c)
    per_model = 4 * (4 * params + activations + evaluation)
    stats = jax.devices()[0].memory_stats() or {}
    budget = stats.get('bytes_limit', 0) * 0.5 or (
      os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') * 0.25
    )
    chunk = max(int(budget // per_model), 1)
  return max(chunk // num_devices, 1) * num_devices


def _put(tree, mesh, axes):
  """Model-axis arrays sharded over the mesh's `models` axis, the rest replicated."""

  def put(x, axis):
    return jax.device_put(x, _sharding(mesh, axis))

  return jax.tree.map(put, tree, axes, is_leaf=_is_axis)


def _finite_per_model(params: dict) -> np.ndarray:
  """`(models,)` bools: whether all of each model's params are finite."""
  finite = [
    jnp.all(jnp.isfinite(v), axis=tuple(range(1, v.ndim))) for v in params.values()
  ]
  return np.asarray(jnp.all(jnp.stack(finite), axis=0))


def train_group(
  configs: list[ml_collections.ConfigDict],
  indices: list[int],
  static: train.Static,
  device: train.DeviceData,
  mesh: jax.sharding.Mesh,
  fields: tuple[str, ...],
  chunk_size: int,
  progress: Progress,
  best: dict,
) -> tuple[list[ModelResult], float]:
  """Trains one shape group, chunk by chunk, with one compiled program.

  Args:
    configs: the group's model configs; `indices` their places in the grid.
    static: the group's shapes (`max_iters` is the group's longest run).
    device: the device-resident data, replicated over `mesh`.
    mesh: a 1-D mesh with axis `models`.
    fields: the batched hyperparameter fields.
    chunk_size: models per call, a multiple of the mesh size.
    progress: shared progress counter (in model-examples).
    best: the best model so far (`val_accuracy`, `result`, `params`); updated.

  Returns:
    Each model's result, and the seconds spent compiling.
  """
  results = []
  _, axes = stacked_hyperparams(configs[:1], fields)
  init, segment = vmapped_functions(static, axes, mesh)
  compile_seconds = 0.0
  for start in range(0, len(configs), chunk_size):
    chunk = configs[start : start + chunk_size]
    padded = chunk + [chunk[-1]] * (chunk_size - len(chunk))  # one shape, one compile
    hparams = _put(stacked_hyperparams(padded, fields)[0], mesh, axes)
    if start == 0:
      t0 = time.perf_counter()
      init = init.lower(hparams).compile()
      segment = segment.lower(init(hparams), hparams, device, jnp.int32(0)).compile()
      compile_seconds = time.perf_counter() - t0
      progress.start_time += compile_seconds  # rates count training time only
    state = init(hparams)
    history = []
    previous_end = 0
    for end in train.segment_ends(static):
      state, metrics = segment(state, hparams, device, jnp.int32(end))
      history.append(
        train.exact_accuracies(
          jax.device_get(metrics), static, device.val_labels.shape[0]
        )
      )
      progress.done += len(chunk) * (end - previous_end) * static.batch_size
      previous_end = end
      progress.log(
        progress.done,
        'H %d, models %d-%d: step %d/%d, best val acc %.4f',
        static.hidden_size,
        indices[start] + 1,
        indices[start + len(chunk) - 1] + 1,
        end,
        static.max_iters,
        np.nanmax(history[-1]['val_accuracy']),
      )
    finite = _finite_per_model(state.params)
    curves = {k: np.stack([h[k] for h in history], axis=1) for k in history[0]}
    for i, config in enumerate(chunk):
      loss = float(curves['train_loss'][i, -1])
      result = ModelResult(
        index=indices[start + i],
        config=config,
        val_accuracy=float(curves['val_accuracy'][i, -1]),
        train_accuracy=float(curves['train_accuracy'][i, -1]),
        final_loss=loss,
        diverged=not (math.isfinite(loss) and bool(finite[i])),
        history={k: v[i].tolist() for k, v in curves.items()},
      )
      results.append(result)
      if not result.diverged and result.val_accuracy > best.get('val_accuracy', -1.0):
        best.update(
          val_accuracy=result.val_accuracy,
          result=result,
          params=jax.device_get(jax.tree.map(lambda x, i=i: x[i], state.params)),
        )
  return results, compile_seconds


def run_sweep(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains every model of `config.sweep` and writes the sweep's workdir files.

  Writes `config.json`, `results.csv`, `results.md` (sorted by validation
  accuracy), `curves.jsonl` (each model's learning curves), `summary.json` and
  `best_params.npz`.

  Args:
    config: a sweep config (see `configs/sweep.py`).
    workdir: output directory.

  Returns:
    The summary dict.
  """
  points = grid.points(config)
  configs = [grid.model_config(config, p) for p in points]
  workdir = workdir_lib.prepare(workdir)
  dataset = run.load_data(config)
  num_train = len(dataset.train_labels)
  for c in configs:
    configlib.validate(c, num_train=num_train)
  workdir_lib.write_json(workdir / 'config.json', config.to_dict())

  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ('models',), (jax.sharding.AxisType.Auto,))
  device = jax.device_put(
    run.device_data(dataset), NamedSharding(mesh, PartitionSpec())
  )
  fields = batched_fields(configs)
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

  best: dict = {}
  results: list[ModelResult] = []
  compile_seconds = 0.0
  t0 = time.perf_counter()
  for key, idx in groups.items():
    static = statics[key]
    chunk = min(
      models_per_chunk(config, static, len(dataset.val_labels), len(devices)),
      math.ceil(len(idx) / len(devices)) * len(devices),
    )
    group_results, seconds = train_group(
      [configs[i] for i in idx],
      idx,
      static,
      device,
      mesh,
      fields,
      chunk,
      progress,
      best,
    )
    results += group_results
    compile_seconds += seconds
  sweep_seconds = time.perf_counter() - t0
  results.sort(key=lambda r: (r.diverged, -r.val_accuracy, r.index))

  summary = {
    'num_models': len(configs),
    'num_diverged': sum(r.diverged for r in results),
    'sweep_seconds': sweep_seconds,
    'compile_seconds': compile_seconds,
    'model_examples_per_second': total / max(sweep_seconds - compile_seconds, 1e-9),
    'batched_fields': list(fields),
    'num_devices': len(devices),
    'backend': jax.default_backend(),
    'jax_version': jax.__version__,
  }
  swept = results_lib.columns(grid.swept_values(config))
  if best:
    test_accuracy = run.split_accuracy(
      best['params'], dataset.test_images, dataset.test_labels
    )
    summary['best'] = {
      **{f: best['result'].config[f] for f in swept},
      'val_accuracy': best['val_accuracy'],
      'test_accuracy': test_accuracy,
    }
    workdir_lib.save_params(workdir / 'best_params.npz', best['params'])
  else:
    summary['best'] = None
    logging.error('Every model diverged: lower the learning rates of the sweep.')
  results_lib.write(workdir, results, swept)
  workdir_lib.write_json(workdir / 'summary.json', summary)
  print(results_lib.markdown_table(results[:10], swept))
  logging.info(
    'Sweep of %d models done in %.1fs (compile %.1fs).',
    len(configs),
    sweep_seconds,
    compile_seconds,
  )
  return summary
