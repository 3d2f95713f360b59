"""Accuracy of one model's params on a whole split, with one compiled program.

Every split is cut into pieces of `CHUNK` examples (the last one padded, its
padding labelled -1), so the same compiled program serves val, test and train
of any size.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mlp import model
from mlp.data import scale_images

CHUNK = 5000


@jax.jit
def _count_correct(params, images, labels):
  """Correct predictions in one chunk (labels -1 mark padding)."""
  logits = model.apply(params, scale_images(images))
  return jnp.sum(jnp.argmax(logits, -1) == labels)


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
  params = jax.device_put(params)
  counts = []
  for start in range(0, len(labels), CHUNK):
    x, y = images[start : start + CHUNK], labels[start : start + CHUNK]
    pad = CHUNK - len(y)
    if pad:
      x = np.pad(x, ((0, pad), (0, 0)))
      y = np.pad(y, (0, pad), constant_values=-1)
    counts.append(_count_correct(params, x, y))
  return sum(int(c) for c in counts) / len(labels)
