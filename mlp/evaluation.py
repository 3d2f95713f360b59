"""Accuracy of one model's params on whole splits, with one compiled program.

`evaluate` predicts every image of every split it is given (train, val and
test at the end of a run) in one call of one compiled program, by the
model's `predict` (`models.Model`; the MLP's unless told). A model without
one is scored by its `accuracy` over the same pieces, weighted by their
sizes (`split_accuracy`). Each split is
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

from mlp import models
from mlp.data import scale_images

CHUNK = 5000


def _pieces(fn, images: jax.Array, *per_example: jax.Array) -> list[jax.Array]:
  """`fn` of each piece of `CHUNK` examples (`lax.map`), then of the rest.

  Args:
    fn: of a piece's scaled inputs and its rows of `per_example`.
    images: a split's inputs, `(N, ...)`.
    *per_example: arrays of the same length (labels).

  Returns:
    `fn`'s outputs: one stacked over the full pieces, then one of the rest
    (each where there is such a piece).
  """
  num = images.shape[0]
  full = num - num % CHUNK
  parts = []
  if full:
    pieces = [
      a[:full].reshape(full // CHUNK, CHUNK, *a.shape[1:])
      for a in (images, *per_example)
    ]
    parts.append(jax.lax.map(lambda p: fn(scale_images(p[0]), *p[1:]), pieces))
  if num > full:
    parts.append(fn(scale_images(images[full:]), *(a[full:] for a in per_example)))
  return parts


def _predict(params, images: jax.Array, model: models.Model, static) -> jax.Array:
  """The predicted class of every example of one split, `(N,)` int32."""
  parts = _pieces(lambda x: model.predict(params, x, static), images)
  parts = [p.reshape(-1) for p in parts]
  return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.int32)


def _predict_splits(params, images: dict, model: models.Model, static) -> dict:
  return {name: _predict(params, x, model, static) for name, x in images.items()}


@functools.partial(jax.jit, static_argnames=('model', 'static'))
def _mean_accuracy(params, images, labels, model: models.Model, static) -> jax.Array:
  """`model.accuracy` over a whole split: each piece's weighted by its size."""
  num = images.shape[0]
  parts = _pieces(
    lambda x, y: model.accuracy(params, x, y, static) * x.shape[0], images, labels
  )
  return sum(jnp.sum(p) for p in parts) / max(num, 1)


def _spec(tree) -> tuple:
  """A hashable description of a pytree of arrays: its structure, shapes, dtypes."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple((tuple(x.shape), np.dtype(x.dtype).name) for x in leaves)


def _structs(spec):
  treedef, leaves = spec
  return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(*x) for x in leaves])


def _tree(params):
  """`params` as a pytree (a loaded `.npz` file is a mapping, not a dict)."""
  return dict(params) if isinstance(params, Mapping) else params


def compiled(
  params,
  images: Mapping[str, jax.Array],
  model: models.Model = models.MLP,
  static=None,
) -> jax.stages.Compiled:
  """The program that predicts every split, compiled once per shape.

  Args:
    params: one model's params, or `jax.ShapeDtypeStruct`s of them.
    images: inputs `(N, ...)` of each split by name (or their structs); uint8
      images are scaled to [0, 1], float inputs go in as they are.
    model: the model, which has a `predict`.
    static: the program's `step.core.Static`, which `model.predict` reads
      (the MLP's does not).

  Returns:
    The compiled program; calling `compiled` again with the same shapes
    returns it without tracing or compiling.
  """
  return _compile(_spec(_tree(params)), _spec(dict(images)), model, static)


@functools.lru_cache(maxsize=16)
def _compile(params_spec: tuple, images_spec: tuple, model, static):
  predict = functools.partial(_predict_splits, model=model, static=static)
  return jax.jit(predict).lower(_structs(params_spec), _structs(images_spec)).compile()


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
  params,
  splits: Mapping[str, tuple[jax.Array, np.ndarray]],
  model: models.Model = models.MLP,
  static=None,
) -> Evaluation:
  """Predicts every image of every split with one call of one program.

  Args:
    params: one model's params (on the host or the device).
    splits: `(images, labels)` by split name: inputs `(N, ...)`, uint8 images
      or float (host or device arrays; device arrays are not copied), int
      labels `(N,)`.
    model: the model, which has a `predict`.
    static: the program's `Static`, for `model.predict`.

  Returns:
    The evaluation; the device computes it while the caller goes on.
  """
  images = {name: x for name, (x, _) in splits.items()}
  labels = {name: np.asarray(y) for name, (_, y) in splits.items()}
  program = compiled(params, images, model, static)
  return Evaluation(program(_tree(params), images), labels)


def split_accuracy(
  params,
  images: np.ndarray,
  labels: np.ndarray,
  model: models.Model = models.MLP,
  static=None,
) -> float:
  """Accuracy of `params` on a whole split.

  Args:
    params: one model's params.
    images: inputs `(N, ...)`: uint8 images, or float.
    labels: int labels, `(N,)`.
    model: the model.
    static: the program's `Static`, which the model's functions read (the
      MLP's `predict` does not).

  Returns:
    The fraction of correct predictions, exact (an integer count over N):
    by the model's `predict`, else by its `accuracy` over pieces of the split.
  """
  if model.predict is not None:
    return evaluate(params, {'split': (images, labels)}, model, static).accuracy(
      'split'
    )
  num = len(labels)
  mean = _mean_accuracy(_tree(params), images, np.asarray(labels), model, static)
  return round(float(mean) * num) / max(num, 1)
