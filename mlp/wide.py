"""Many SGD models side by side in one wide first layer: a sweep's fast path.

A sweep's models that share their mini-batches (one seed) all multiply the
same `x` by their own `W1`. Stored `(D, models, H)`, the models' first layers
are one `(D, models * H)` matrix: the forward pass is one wide matmul and the
gradient `x.T @ dZ` comes out in the same layout, where per-model learning
rates broadcast along the middle axis. Vmapped, XLA keeps `W1` model axis
first for the element-wise update and transposes it around both matmuls on
every step (`bench/wide_layout.py` measures the difference).

The math is the per-model math: the group's loss is the sum of the models'
losses (`model.loss` of each), so `jax.grad` of it gives each model exactly its
own gradient. The rest of the network (ReLU, second layer, cross-entropy) is
`model`'s code, vmapped over the models.
"""

import jax
import jax.numpy as jnp

from mlp import model

# Where each parameter's model axis is, in the wide layout.
AXES = {'W1': 1, 'b1': 0, 'W2': 0, 'b2': 0}


def to_wide(params: model.Params) -> model.Params:
  """Stacked params (model axis first) to the wide layout."""
  return {**params, 'W1': jnp.transpose(params['W1'], (1, 0, 2))}


def from_wide(params: model.Params) -> model.Params:
  """The wide layout back to stacked params (model axis first)."""
  return {**params, 'W1': jnp.transpose(params['W1'], (1, 0, 2))}


def per_model(value: jax.Array, name: str, params: model.Params) -> jax.Array:
  """A per-model scalar `(models,)` (or one scalar) shaped to broadcast on `name`."""
  value = jnp.asarray(value)
  if value.ndim == 0:
    return value
  shape = [1] * params[name].ndim
  shape[AXES[name]] = value.shape[0]
  return value.reshape(shape)


def l2_penalty(params: model.Params) -> jax.Array:
  """Each model's `||W1||^2 + ||W2||^2`, `(models,)`."""
  return jnp.sum(params['W1'] ** 2, axis=(0, 2)) + jnp.sum(
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
  d, num_models, h = params['W1'].shape
  wide_w1 = params['W1'].reshape(d, num_models * h)
  z = model.matmul(x, wide_w1, compute_dtype).reshape(-1, num_models, h) + params['b1']

  def head(z, w2, b2, smoothing):
    logits = model.matmul(jax.nn.relu(z), w2, compute_dtype) + b2
    return model.cross_entropy(logits, labels, smoothing)

  cross_entropy = jax.vmap(head, in_axes=(1, 0, 0, label_smoothing_axis))(
    z, params['W2'], params['b2'], label_smoothing
  )
  loss = cross_entropy + 0.5 * l2_reg * l2_penalty(params)
  return jnp.sum(loss), cross_entropy


def sgd_update(
  params: model.Params, grads: model.Params, learning_rate: jax.Array
) -> model.Params:
  """`params - learning_rate * grads`, the learning rate per model."""
  return {
    name: params[name] - per_model(learning_rate, name, params) * grads[name]
    for name in params
  }
