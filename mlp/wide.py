"""Many SGD models side by side in one tall first layer: a sweep's fast path.

A sweep's models that share their mini-batches (one seed) all multiply the
same `x` by their own `W1`. Stored transposed and stacked, `(models, H, D)`,
the models' first layers are one `(models * H, D)` matrix, and both big
matmuls of a step are single plain matmuls over all the models:
`Z^T = W1 @ x^T`, `(models * H, batch)`, and the gradient `dZ^T @ x`, which
comes out in `W1`'s own layout. Everything after the first layer stays model
axis first with the batch last (`(models, H, batch)`, `(models, C, batch)`),
so the second layer's per-model matmuls are batched matmuls over a leading
axis and XLA inserts no transposes. Per-model learning rates broadcast along
the leading axis of every parameter. `bench/wide_layout.py` measures this
layout against the vmapped step.

The math is the per-model math: the group's loss is the sum of the models'
losses (`model.cross_entropy` of each plus its L2 penalty), so `jax.grad` of it
gives each model exactly its own gradient.
"""

import jax
import jax.numpy as jnp

from mlp import model


def to_wide(params: model.Params) -> model.Params:
  """Stacked params (`W1` `(models, D, H)`) to the wide layout (`(models, H, D)`)."""
  return {**params, 'W1': jnp.swapaxes(params['W1'], 1, 2)}


def from_wide(params: model.Params) -> model.Params:
  """The wide layout back to stacked params (model axis first, `W1` `(models, D, H)`)."""
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
    params: wide params.
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


def sgd_update(
  params: model.Params, grads: model.Params, learning_rate: jax.Array
) -> model.Params:
  """`params - learning_rate * grads`, the learning rate per model."""
  return {
    name: params[name] - per_model(learning_rate, params[name]) * grads[name]
    for name in params
  }
