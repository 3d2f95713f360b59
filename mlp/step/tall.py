"""Fast path: plain-SGD models that share their batches, as one tall first layer.

A sweep's models that share their mini-batches (one seed) all multiply the
same `x` by their own `W1`. Stored transposed and stacked, `(models, H, D)`,
their first layers are one tall `(models * H, D)` matrix, and both big matmuls
of a step are single plain matmuls over all the models: `Z^T = W1 @ x^T`,
`(models * H, batch)`, and the gradient `dZ^T @ x`, which comes out in `W1`'s
own layout. Everything after the first layer stays model axis first with the
batch last (`(models, H, batch)`, `(models, C, batch)`), so the second layer's
per-model matmuls are batched matmuls over a leading axis and XLA inserts no
transposes. `docs/performance.md` measures this layout against the vmapped step.

The math is the per-model math: the group's loss is the sum of the models'
losses (`model.cross_entropy` of each plus its L2 penalty), so `jax.grad` of it
gives each model exactly its own gradient, and the update is `optax.sgd`'s.
"""

import functools

import jax
import jax.numpy as jnp

from mlp import model, models
from mlp.hparams import Hyperparams
from mlp.step import blocked, core

# Plain SGD, one batch for all: the seed is shared (not in `per_model`).
SUPPORTS = core.Supports(
  choices={
    'optimizer': ('sgd',),
    'lr_schedule': ('epoch_decay', 'cosine'),
    'sampling': ('replacement',),
    'init': ('normal', 'he'),
    'compute_dtype': ('float32', 'bfloat16'),
  },
  hyperparams=frozenset(
    {
      'learning_rate',
      'lr_decay',
      'l2_reg',
      'init_std',
      'seed',
      'num_iters',
      'label_smoothing',
      'warmup_iters',
    }
  ),
  per_model=frozenset(
    {
      'learning_rate',
      'lr_decay',
      'l2_reg',
      'init_std',
      'num_iters',
      'label_smoothing',
      'warmup_iters',
    }
  ),
  many_models=True,
  models=(models.MLP,),  # its tall layout is the MLP's first layer
)


def to_tall(params: model.Params) -> model.Params:
  """Stacked params (`W1` `(models, D, H)`) to the tall layout (`(models, H, D)`)."""
  return {**params, 'W1': jnp.swapaxes(params['W1'], 1, 2)}


def from_tall(params: model.Params) -> model.Params:
  """The tall layout back to stacked params (`W1` `(models, D, H)`)."""
  return {**params, 'W1': jnp.swapaxes(params['W1'], 1, 2)}


def per_model(value: jax.Array, like: jax.Array) -> jax.Array:
  """A per-model scalar `(models,)` (or one scalar) shaped to broadcast on `like`."""
  value = jnp.asarray(value)
  if value.ndim == 0:
    return value
  return value.reshape(value.shape + (1,) * (like.ndim - 1))


def l2_penalty(params: model.Params) -> jax.Array:
  """Each model's `||W1||^2 + ||W2||^2`, `(models,)`."""
  return jnp.sum(params['W1'] ** 2, axis=(1, 2)) + jnp.sum(
    params['W2'] ** 2, axis=(1, 2)
  )


def loss_and_cross_entropy(
  params: model.Params,
  x: jax.Array,
  labels: jax.Array,
  l2_reg: jax.Array,
  label_smoothing: jax.Array | None,
  label_smoothing_axis: int | None,
  compute_dtype: str = 'float32',
) -> tuple[jax.Array, jax.Array]:
  """`(sum of the models' losses, each model's cross-entropy (models,))`.

  Args:
    params: tall params.
    x: the shared inputs, `(batch, D)`.
    labels: `(batch,)`.
    l2_reg: lambda, one scalar or `(models,)`.
    label_smoothing: `None`, or epsilon (one scalar or `(models,)`).
    label_smoothing_axis: `None` if `label_smoothing` is one scalar, else 0.
    compute_dtype: as in `model.apply`.
  """
  num_models, h, d = params['W1'].shape
  tall_w1 = params['W1'].reshape(num_models * h, d)
  z = model.einsum('kd,bd->kb', tall_w1, x, compute_dtype).reshape(num_models, h, -1)
  hidden = jax.nn.relu(z + params['b1'][:, :, None])
  logits = model.einsum('mhc,mhb->mcb', params['W2'], hidden, compute_dtype)
  logits = logits + params['b2'][:, :, None]

  def cross_entropy(logits, smoothing):  # logits (C, batch)
    return model.cross_entropy(logits.T, labels, smoothing)

  cross_entropy = jax.vmap(cross_entropy, in_axes=(0, label_smoothing_axis))(
    logits, label_smoothing
  )
  loss = cross_entropy + 0.5 * l2_reg * l2_penalty(params)
  return jnp.sum(loss), cross_entropy


def train_step(
  state: core.TrainState,
  hparams: Hyperparams,
  data: core.DeviceData,
  static: core.Static,
  randomness: core.Randomness,
  penalty: jax.Array,
  hparam_axes: Hyperparams,
) -> tuple[core.TrainState, dict, jax.Array]:
  """`blocked.train_step` of all the models at once, params tall.

  Per-model hyperparameters are `(models,)` arrays (or shared scalars) that
  broadcast along each parameter's leading axis.
  """
  _, x, y = core.batch(state, hparams, data, static, randomness)
  uses_smoothing = static.uses('label_smoothing')
  (_, cross_entropy), grads = jax.value_and_grad(loss_and_cross_entropy, has_aux=True)(
    state.params,
    x,
    y,
    hparams.l2_reg,
    hparams.label_smoothing if uses_smoothing else None,
    hparam_axes.label_smoothing if uses_smoothing else None,
    static.compute_dtype,
  )
  loss = cross_entropy + 0.5 * hparams.l2_reg * penalty
  active = state.step < hparams.num_iters
  lr = jnp.where(active, core.learning_rate_at(hparams, state.step, static), 0.0)
  params = {
    name: value - per_model(lr, value) * grads[name]
    for name, value in state.params.items()
  }
  state = state._replace(params=params, step=state.step + 1)
  return state, {'loss': loss, 'active': active}, l2_penalty(params)


def run_steps(
  state: core.TrainState,
  hparams: Hyperparams,
  data: core.DeviceData,
  static: core.Static,
  end_step: jax.Array,
  hparam_axes: Hyperparams | None = None,
) -> tuple[core.TrainState, jax.Array, jax.Array]:
  """As `core.run_steps` for many models, with the first layer tall."""

  def step_fn(state, hparams, randomness, penalty):
    return train_step(state, hparams, data, static, randomness, penalty, hparam_axes)

  draw_fn = functools.partial(blocked.draw_block, static=static)
  state = state._replace(params=to_tall(state.params))
  state, loss_sum, count = blocked.run_blocks(
    step_fn, l2_penalty, draw_fn, state, hparams, end_step
  )
  return state._replace(params=from_tall(state.params)), loss_sum, count
