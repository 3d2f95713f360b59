"""The device memory a run needs, estimated before anything is allocated.

XLA allocates when a program first runs; a config that cannot fit then fails
deep inside the runtime, or on some platforms waits forever. So the modes
check `estimate` against what the device has (`available_bytes`) before they
compile, and a sweep sizes its chunks from the same estimate.

The estimate counts, in float32: each model's params, gradients and optimizer
state (slots per parameter by optimizer), the activations of one training
step and of one evaluation (the training subset and val, whole), and the
permutation a model samples from; and once per device, the uint8 images and
int32 labels of the train and val splits. For a model other than the MLP the
params are counted from its init's shapes (`jax.eval_shape`, nothing
allocated) and the activations as one batch's and the evaluations' inputs
and class scores: its hidden activations are its own, so that is a floor.
"""

import os
from typing import NamedTuple

import jax

from mlp import models
from mlp.errors import UserError
from mlp.step import core

_FLOAT = 4
_OPTIMIZER_SLOTS = {'sgd': 0, 'momentum': 1, 'nesterov': 1, 'adam': 2, 'adamw': 2}


class Estimate(NamedTuple):
  """Bytes a program needs: `per_model` times the models, plus `shared`."""

  params: int  # params, gradients and optimizer state of one model
  activations: int  # one model's training-step and evaluation activations
  shared: int  # the data on the device

  @property
  def per_model(self) -> int:
    return self.params + self.activations

  def total(self, num_models: int) -> int:
    return num_models * self.per_model + self.shared


def estimate(static: core.Static, num_val: int) -> Estimate:
  """The memory of one model of `static` (and the shared data, counted as
  uint8 images: float inputs take four times that), in bytes."""
  d, c = static.input_size, static.num_classes
  if static.model is models.MLP:
    h = static.hidden_size
    params = d * h + h + h * c + c
  else:
    h = 0  # its hidden activations are unknown here
    params = models.param_count(static.model, static)
  slots = 2 + _OPTIMIZER_SLOTS.get(static.optimizer, 2)  # params, gradients, state
  step = static.batch_size * (d + 3 * h + 3 * c)
  evaluation = (static.train_eval_size + num_val) * (h + c)
  order = static.num_train if static.sampling == 'permutation' else 0
  return Estimate(
    params=_FLOAT * slots * params,
    activations=_FLOAT * (step + evaluation) + 4 * order,
    shared=(static.num_train + num_val) * (d + 4),
  )


def available_bytes(device: jax.Device | None = None) -> tuple[int, str]:
  """Memory a program may use on `device`, and where that figure comes from.

  Accelerators report their allocator's limit; on CPU, the host memory that
  is available now (`MemAvailable`), which the other processes also use.
  """
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() or {}
  if stats.get('bytes_limit'):
    return int(stats['bytes_limit'] - stats.get('bytes_in_use', 0)), (
      f'{device.platform} device memory'
    )
  try:
    with open('/proc/meminfo') as f:
      info = dict(line.split(':', 1) for line in f)
    return int(info['MemAvailable'].split()[0]) * 1024, 'available host memory'
  except (OSError, KeyError, ValueError):
    pages = os.sysconf('SC_AVPHYS_PAGES')
    return pages * os.sysconf('SC_PAGE_SIZE'), 'available host memory'


def _gb(n: float) -> str:
  return f'{n / 1e9:.2f} GB' if n < 1e12 else f'{n / 1e12:.1f} TB'


def check(
  static: core.Static,
  num_val: int,
  num_models: int = 1,
  fix: str = 'lower hidden_size, batch_size or train_eval_size',
) -> Estimate:
  """Refuses a program of `num_models` models (per device) that cannot fit;
  `fix` ends the message.

  Raises:
    UserError: naming the estimate and the memory available.
  """
  need = estimate(static, num_val)
  have, source = available_bytes()
  if need.total(num_models) > have:
    models = f'{num_models} models' if num_models > 1 else 'one model'
    raise UserError(
      f'hidden_size={static.hidden_size} needs about {_gb(need.total(num_models))} '
      f'for {models} (params, gradients and optimizer state {_gb(need.params * num_models)}, '
      f'activations {_gb(need.activations * num_models)}, data {_gb(need.shared)}) but '
      f'{_gb(have)} of {source} is free: {fix}'
    )
  return need
