"""Accuracy of one model's params on whole splits, with one compiled program.

`evaluate` predicts every image of every split it is given (train, val and
test at the end of a run) in one call of one compiled program. Each split is
cut inside the program into pieces of `CHUNK` examples (`lax.map`, so memory
stays bounded), plus one piece for the remainder. The program is compiled
once per shape of params and splits (`compiled`), and a run compiles it beside
its training program, so nothing is compiled at its end. A call returns at
once (JAX dispatches asynchronously); the predictions are fetched when first
read, so a caller can draw its plots while the device evaluates.
"""

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mlp import model
from mlp.data import scale_images

CHUNK = 5000


def _predict(params: model.Params, images: jax.Array) -> jax.Array:
  """The predicted class of every image of one split, `(N,)` int32."""

  def predict(x):
    return jnp.argmax(model.apply(params, scale_images(x)), -1).astype(jnp.int32)

  num, size = images.shape
  full = num - num % CHUNK
  parts = []
  if full:
    chunks = images[:full].reshape(full // CHUNK, CHUNK, size)
    parts.append(jax.lax.map(predict, chunks).reshape(full))
  if num > full:
    parts.append(predict(images[full:]))
  return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.int32)


def _predict_splits(params: model.Params, images: dict) -> dict:
  return {name: _predict(params, x) for name, x in images.items()}


def _spec(tree) -> tuple:
  """A hashable description of a dict of arrays: names, shapes, dtypes."""
  return tuple(
    (name, tuple(x.shape), np.dtype(x.dtype).name) for name, x in sorted(tree.items())
  )


def compiled(params: Mapping, images: Mapping[str, jax.Array]) -> jax.stages.Compiled:
  """The program that predicts every split, compiled once per shape.

  Args:
    params: one model's params, or `jax.ShapeDtypeStruct`s of them.
    images: uint8 images `(N, D)` of each split by name (or their structs).

  Returns:
    The compiled program; calling `compiled` again with the same shapes
    returns it without tracing or compiling.
  """
  return _compile(_spec(params), _spec(images))


@functools.lru_cache(maxsize=16)
def _compile(params_spec: tuple, images_spec: tuple) -> jax.stages.Compiled:
  def structs(spec):
    return {name: jax.ShapeDtypeStruct(shape, dtype) for name, shape, dtype in spec}

  return (
    jax.jit(_predict_splits).lower(structs(params_spec), structs(images_spec)).compile()
  )


class Evaluation:
  """The predictions and accuracies of one `evaluate` call, fetched when read."""

  def __init__(self, predictions: dict, labels: dict):
    self._device = predictions
    self._labels = labels
    self._host: dict[str, np.ndarray] = {}

  def predictions(self, split: str) -> np.ndarray:
    """The predicted class of each image of `split` (waits for the device)."""
    if split not in self._host:
      self._host[split] = np.asarray(self._device[split])
    return self._host[split]

  def accuracy(self, split: str) -> float:
    """The fraction of correct predictions on `split`, exact (a count over N)."""
    labels = self._labels[split]
    correct = int(np.sum(self.predictions(split) == labels))
    return correct / len(labels)


def evaluate(
  params: model.Params, splits: Mapping[str, tuple[jax.Array, np.ndarray]]
) -> Evaluation:
  """Predicts every image of every split with one call of one program.

  Args:
    params: one model's params (on the host or the device).
    splits: `(images, labels)` by split name: uint8 images `(N, D)` (host or
      device arrays; device arrays are not copied), int labels `(N,)`.

  Returns:
    The evaluation; the device computes it while the caller goes on.
  """
  images = {name: x for name, (x, _) in splits.items()}
  labels = {name: np.asarray(y) for name, (_, y) in splits.items()}
  program = compiled(params, images)
  return Evaluation(program(dict(params), images), labels)


def split_accuracy(
  params: model.Params, images: np.ndarray, labels: np.ndarray
) -> float:
  """Accuracy of `params` on a whole split.

  Args:
    params: one model's params.
    images: uint8 images, `(N, D)`.
    labels: int labels, `(N,)`.

  Returns:
    The fraction of correct predictions, exact (an integer count over N).
  """
  return evaluate(params, {'split': (images, labels)}).accuracy('split')
