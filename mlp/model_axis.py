"""The model axis of a sweep: shardings over devices, and chunk sizes.

Many models train as one program with their per-model arrays stacked along a
leading model axis (see `hparams.stack` and `step.core.STATE_AXES`). Here that
axis is split over the mesh axis `models`, which spans every device of every
process, and a sweep's models are cut into chunks that fit in memory.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mlp import distributed, resources
from mlp.step import core


def sharding(mesh: jax.sharding.Mesh, axis: int | None) -> NamedSharding:
  """The model axis (at position `axis`) split over the mesh axis `models`."""
  if axis is None:
    return NamedSharding(mesh, PartitionSpec())
  return NamedSharding(mesh, PartitionSpec(*[None] * axis, 'models'))


def model_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh, axis `models`, over every device of every process."""
  return jax.make_mesh(
    (jax.device_count(),), ('models',), (jax.sharding.AxisType.Auto,)
  )


def replicated_data(dataset, mesh: jax.sharding.Mesh) -> core.DeviceData:
  """The train and val splits on every device of `mesh` (images stay uint8)."""
  replicated = NamedSharding(mesh, PartitionSpec())
  arrays = (
    dataset.train_images,
    dataset.train_labels,
    dataset.val_images,
    dataset.val_labels,
  )
  return core.DeviceData(*(distributed.put(x, replicated) for x in arrays))


def state_shardings(mesh: jax.sharding.Mesh) -> core.TrainState:
  """Where each part of a many-model state lives: by model, the step replicated."""
  by_model = sharding(mesh, 0)
  return core.TrainState(
    params=by_model,
    opt_state=by_model,
    step=sharding(mesh, None),
    train_loss=by_model,
    order=by_model,
  )


def _is_axis(x) -> bool:
  return x is None or isinstance(x, int)


def models_per_chunk(
  config, static: core.Static, num_val: int, num_devices: int
) -> int:
  """How many models train at once: `config.models_per_chunk`, or what fits.

  What fits: `resources.estimate` per model against half the memory
  available on a device, the data counted once.

  Raises:
    UserError: when `config.models_per_chunk` models cannot fit.
  """
  if config.get('models_per_chunk', 0) > 0:
    chunk = config.models_per_chunk
    resources.check(
      static,
      num_val,
      num_models=-(-chunk // num_devices),
      fix='lower models_per_chunk (0: as many as fit)',
    )
  else:
    need = resources.estimate(static, num_val)
    have, _ = resources.available_bytes()
    chunk = max(int((have * 0.5 - need.shared) // need.per_model), 1)
  return max(chunk // num_devices, 1) * num_devices


def put_models(tree, mesh, axes):
  """Model-axis arrays sharded over the mesh's `models` axis, the rest replicated."""

  def put(x, axis):
    return distributed.put(x, sharding(mesh, axis))

  return jax.tree.map(put, tree, axes, is_leaf=_is_axis)


def finite_per_model(params) -> np.ndarray:
  """`(models,)` bools: whether all of each model's params (any pytree) are finite."""
  return np.asarray(distributed.to_host(_finite_per_model(params)))


@jax.jit
def _finite_per_model(params) -> jax.Array:
  finite = [
    jnp.all(jnp.isfinite(v), axis=tuple(range(1, v.ndim)))
    for v in jax.tree.leaves(params)
  ]
  return jnp.all(jnp.stack(finite), axis=0)
