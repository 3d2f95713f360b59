"""Many models at once: stacked hyperparameters, vmapped programs, shardings.

The model axis of a sweep: `Hyperparams` fields that differ across models are
stacked along axis 0 and the rest stay unbatched (so models sharing a seed
share their mini-batches); the training step is vmapped inside the training
loop; the model axis is sharded over the mesh axis `models`.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mlp import configlib, distributed, grid, train

# Every state leaf keeps its model axis first, except the shared step counter.
# (Measured: putting W1's model axis in the middle, to make `x @ W1` one wide
# matmul, is no faster on CPU: per-model broadcasts of the learning rate move
# the axis back to the front.)
STATE_AXES = train.TrainState(params=0, opt_state=0, step=None, train_loss=0, order=0)


def _sharding(mesh: jax.sharding.Mesh, axis: int | None) -> NamedSharding:
  """The model axis (at position `axis`) split over the mesh axis `models`."""
  if axis is None:
    return NamedSharding(mesh, PartitionSpec())
  return NamedSharding(mesh, PartitionSpec(*[None] * axis, 'models'))


def model_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh, axis `models`, over every device of every process."""
  return jax.make_mesh(
    (jax.device_count(),), ('models',), (jax.sharding.AxisType.Auto,)
  )


def replicated_data(dataset, mesh: jax.sharding.Mesh) -> train.DeviceData:
  """The train and val splits on every device of `mesh` (images stay uint8)."""
  replicated = NamedSharding(mesh, PartitionSpec())
  arrays = (
    dataset.train_images,
    dataset.train_labels,
    dataset.val_images,
    dataset.val_labels,
  )
  return train.DeviceData(*(distributed.put(x, replicated) for x in arrays))


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
    params=by_model,
    opt_state=by_model,
    step=_sharding(mesh, None),
    train_loss=by_model,
    order=by_model,
  )
  return (
    jax.jit(init, out_shardings=state_sharding),
    jax.jit(
      segment,
      donate_argnums=0,
      out_shardings=(state_sharding, by_model),
      compiler_options=train.compiler_options(static.compute_dtype, many_models=True),
    ),
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
    stats = jax.local_devices()[0].memory_stats() or {}
    budget = stats.get('bytes_limit', 0) * 0.5 or (
      os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') * 0.25
    )
    chunk = max(int(budget // per_model), 1)
  return max(chunk // num_devices, 1) * num_devices


def put_models(tree, mesh, axes):
  """Model-axis arrays sharded over the mesh's `models` axis, the rest replicated."""

  def put(x, axis):
    return distributed.put(x, _sharding(mesh, axis))

  return jax.tree.map(put, tree, axes, is_leaf=_is_axis)


def finite_per_model(params: dict) -> np.ndarray:
  """`(models,)` bools: whether all of each model's params are finite."""
  finite = [
    jnp.all(jnp.isfinite(v), axis=tuple(range(1, v.ndim))) for v in params.values()
  ]
  return np.asarray(distributed.to_host(jnp.all(jnp.stack(finite), axis=0)))
