"""The two-layer network as pure functions on a dict pytree.

Params: `W1 (D, H)`, `b1 (H,)`, `W2 (H, C)`, `b2 (C,)`, with the `x @ W` layout.
Forward: `logits = relu(x W1 + b1) W2 + b2`. Loss: mean softmax cross-entropy
plus `l2_reg / 2 * (||W1||^2 + ||W2||^2)`; biases are not penalized.
"""

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, jax.Array]


def init_params(
  key: jax.Array,
  input_size: int,
  hidden_size: int,
  num_classes: int,
  init_std: jax.Array | float,
  init: str = 'normal',
) -> Params:
  """Gaussian weights, zero biases.

  Args:
    key: a `jax.random.key`.
    input_size: D, 784 for MNIST.
    hidden_size: H.
    num_classes: C, 10 for MNIST.
    init_std: with `init='normal'`, the weights' standard deviation (the
      course's convention); may be a traced scalar, so one compiled program
      serves every value.
    init: 'normal' (N(0, init_std^2)) or 'he' (N(0, 2 / fan_in), He et al.
      2015; `init_std` unused).

  Returns:
    `{'W1': (D, H), 'b1': (H,), 'W2': (H, C), 'b2': (C,)}`, float32.
  """
  key1, key2 = jax.random.split(key)
  if init == 'he':
    std1, std2 = np.sqrt(2.0 / input_size), np.sqrt(2.0 / hidden_size)
  elif init == 'normal':
    std1 = std2 = init_std
  else:
    raise ValueError(f'unknown init {init!r}')
  return {
    'W1': std1 * jax.random.normal(key1, (input_size, hidden_size), jnp.float32),
    'b1': jnp.zeros((hidden_size,), jnp.float32),
    'W2': std2 * jax.random.normal(key2, (hidden_size, num_classes), jnp.float32),
    'b2': jnp.zeros((num_classes,), jnp.float32),
  }


def shape_problem(params: dict, input_size: int, num_classes: int | None = None):
  """Why `params` is not a `input_size`-H-`num_classes` network, or `None`.

  Args:
    params: arrays by name, e.g. loaded from `params.npz`.
    input_size: D.
    num_classes: C, or `None` for any.

  Returns:
    `None` if the shapes fit, else a description such as
    "shapes {...}, need W1 (784, H)".
  """
  shapes = {k: tuple(np.shape(v)) for k, v in params.items()}
  w1, w2 = shapes.get('W1', ()), shapes.get('W2', ())
  fits = (
    set(shapes) == {'W1', 'b1', 'W2', 'b2'}
    and len(w1) == 2
    and len(w2) == 2
    and w1[0] == input_size
    and w2[0] == w1[1]
    and shapes['b1'] == (w1[1],)
    and shapes['b2'] == (w2[1],)
    and num_classes in (None, w2[1])
  )
  if fits:
    return None
  classes = 'C' if num_classes is None else num_classes
  return f'shapes {shapes}, need W1 ({input_size}, H) and W2 (H, {classes})'


def num_params(params: Params) -> int:
  """Total number of scalars in `params`."""
  return sum(x.size for x in jax.tree.leaves(params))


def apply(
  params: Params,
  x: jax.Array,
  dropout_rate: jax.Array | float = 0.0,
  dropout_key: jax.Array | None = None,
  compute_dtype: str = 'float32',
) -> jax.Array:
  """Class scores.

  Args:
    params: the parameter pytree.
    x: inputs, `(batch, D)` float.
    dropout_rate: with `dropout_key`, the fraction of hidden units dropped
      (inverted dropout: the kept ones are scaled by `1 / (1 - rate)`).
    dropout_key: `None` (no dropout, as at evaluation) or a `jax.random.key`.
    compute_dtype: 'float32', or 'bfloat16' for matmuls with bfloat16 inputs
      and float32 accumulation (params and everything else stay float32).

  Returns:
    Logits, `(batch, C)`.
  """
  hidden = jax.nn.relu(matmul(x, params['W1'], compute_dtype) + params['b1'])
  if dropout_key is not None:
    keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, hidden.shape)
    hidden = jnp.where(keep, hidden / (1.0 - dropout_rate), 0.0)
  return matmul(hidden, params['W2'], compute_dtype) + params['b2']


def matmul(a: jax.Array, b: jax.Array, dtype: str) -> jax.Array:
  """`a @ b`; with dtype 'bfloat16', bfloat16 inputs and float32 accumulation."""
  return einsum('...i,ij->...j', a, b, dtype)


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype: str) -> jax.Array:
  """`jnp.einsum(spec, a, b)` with inputs in `dtype` ('float32' or 'bfloat16',
  accumulated in float32)."""
  if dtype == 'float32':
    return jnp.einsum(spec, a, b)
  return jnp.einsum(
    spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32
  )


def l2_penalty(params: Params) -> jax.Array:
  """`||W1||^2 + ||W2||^2`; biases are not penalized."""
  return jnp.sum(params['W1'] ** 2) + jnp.sum(params['W2'] ** 2)


def cross_entropy(
  logits: jax.Array, labels: jax.Array, label_smoothing: jax.Array | float | None = None
) -> jax.Array:
  """Mean softmax cross-entropy, via log-softmax (stable for any logits).

  Args:
    logits: `(batch, C)`.
    labels: integer classes, `(batch,)`.
    label_smoothing: `None`, or epsilon: the target puts `1 - epsilon` on the
      label and spreads `epsilon` evenly over all C classes.

  Returns:
    A scalar.
  """
  log_probs = jax.nn.log_softmax(logits)
  nll = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
  if label_smoothing is None:
    return nll
  uniform = -jnp.mean(log_probs)
  return (1.0 - label_smoothing) * nll + label_smoothing * uniform


def loss(
  params: Params,
  x: jax.Array,
  labels: jax.Array,
  l2_reg: jax.Array | float,
  label_smoothing: jax.Array | float | None = None,
  dropout_rate: jax.Array | float = 0.0,
  dropout_key: jax.Array | None = None,
  compute_dtype: str = 'float32',
) -> jax.Array:
  """Mean cross-entropy plus `l2_reg / 2 * (||W1||^2 + ||W2||^2)`.

  Args:
    params: the parameter pytree.
    x: inputs, `(batch, D)` float.
    labels: integer classes, `(batch,)`.
    l2_reg: lambda; may be traced.
    label_smoothing: see `cross_entropy`.
    dropout_rate: see `apply`.
    dropout_key: see `apply`.
    compute_dtype: see `apply`.

  Returns:
    A scalar.
  """
  return loss_and_cross_entropy(
    params, x, labels, l2_reg, label_smoothing, dropout_rate, dropout_key, compute_dtype
  )[0]


def loss_and_cross_entropy(
  params: Params,
  x: jax.Array,
  labels: jax.Array,
  l2_reg: jax.Array | float,
  label_smoothing: jax.Array | float | None = None,
  dropout_rate: jax.Array | float = 0.0,
  dropout_key: jax.Array | None = None,
  compute_dtype: str = 'float32',
) -> tuple[jax.Array, jax.Array]:
  """`(loss, its cross-entropy term)`, for `jax.value_and_grad(..., has_aux=True)`.

  The training step differentiates the loss but reports the cross-entropy plus
  a penalty it already knows, so XLA drops the second read of the weights that
  the loss value would take. Arguments as for `loss`.
  """
  logits = apply(params, x, dropout_rate, dropout_key, compute_dtype)
  data_loss = cross_entropy(logits, labels, label_smoothing)
  return data_loss + 0.5 * l2_reg * l2_penalty(params), data_loss


def accuracy(
  params: Params, x: jax.Array, labels: jax.Array, compute_dtype: str = 'float32'
) -> jax.Array:
  """Fraction of `x` (`(batch, D)`) whose arg-max class equals `labels`."""
  logits = apply(params, x, compute_dtype=compute_dtype)
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
