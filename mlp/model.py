"""The two-layer network as pure functions on a dict pytree.

Params: `W1 (D, H)`, `b1 (H,)`, `W2 (H, C)`, `b2 (C,)`, with the `x @ W` layout.
Forward: `logits = relu(x W1 + b1) W2 + b2`. Loss: mean softmax cross-entropy
plus `l2_reg / 2 * (||W1||^2 + ||W2||^2)`; biases are not penalized.
"""

import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]


def init_params(
  key: jax.Array,
  input_size: int,
  hidden_size: int,
  num_classes: int,
  init_std: jax.Array | float,
) -> Params:
  """Weights from N(0, init_std^2), biases zero (the course's convention).

  Args:
    key: a `jax.random.key`.
    input_size: D, 784 for MNIST.
    hidden_size: H.
    num_classes: C, 10 for MNIST.
    init_std: standard deviation of the weights; may be a traced scalar, so one
      compiled program serves every value.

  Returns:
    `{'W1': (D, H), 'b1': (H,), 'W2': (H, C), 'b2': (C,)}`, float32.
  """
  key1, key2 = jax.random.split(key)
  return {
    'W1': init_std * jax.random.normal(key1, (input_size, hidden_size), jnp.float32),
    'b1': jnp.zeros((hidden_size,), jnp.float32),
    'W2': init_std * jax.random.normal(key2, (hidden_size, num_classes), jnp.float32),
    'b2': jnp.zeros((num_classes,), jnp.float32),
  }


def num_params(params: Params) -> int:
  """Total number of scalars in `params`."""
  return sum(x.size for x in jax.tree.leaves(params))


def apply(params: Params, x: jax.Array) -> jax.Array:
  """Class scores.

  Args:
    params: the parameter pytree.
    x: inputs, `(batch, D)` float.

  Returns:
    Logits, `(batch, C)`.
  """
  hidden = jax.nn.relu(x @ params['W1'] + params['b1'])
  return hidden @ params['W2'] + params['b2']


def l2_penalty(params: Params) -> jax.Array:
  """`||W1||^2 + ||W2||^2`; biases are not penalized."""
  return jnp.sum(params['W1'] ** 2) + jnp.sum(params['W2'] ** 2)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy, via log-softmax (stable for any logits).

  Args:
    logits: `(batch, C)`.
    labels: integer classes, `(batch,)`.

  Returns:
    A scalar.
  """
  log_probs = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def loss(
  params: Params, x: jax.Array, labels: jax.Array, l2_reg: jax.Array | float
) -> jax.Array:
  """Mean cross-entropy plus `l2_reg / 2 * (||W1||^2 + ||W2||^2)`.

  Args:
    params: the parameter pytree.
    x: inputs, `(batch, D)` float.
    labels: integer classes, `(batch,)`.
    l2_reg: lambda; may be traced.

  Returns:
    A scalar.
  """
  return cross_entropy(apply(params, x), labels) + 0.5 * l2_reg * l2_penalty(params)


def accuracy(params: Params, x: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of `x` (`(batch, D)`) whose arg-max class equals `labels`."""
  return jnp.mean(jnp.argmax(apply(params, x), axis=-1) == labels)
