"""A workdir's trained network as a classifier of pictures of digits.

The one code path of `--mode=predict` (image files) and `--mode=serve` (a
page and an HTTP API): `load` reads and checks the params once,
`read_picture` opens a picture and turns it into the 28x28 image MNIST would
have made of it (`mlp.digit_image`), `classify` runs the network on such
images and says which ones have no digit to see. `model_card` describes the
model for people: its workdir, size, accuracy and config.
"""

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import jax
import numpy as np
from PIL import Image

from mlp import model, report
from mlp import workdir as workdir_lib
from mlp.digit_image import IMAGE_SHAPE, Digit, preprocess_digit
from mlp.errors import UserError

INPUT_SIZE = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# What PIL raises for a missing or broken file (more than OSError).
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class PictureTooLarge(ValueError):
  """A picture with more pixels than the caller allows (a decompression bomb)."""


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A trained 784-H-C network, loaded once.

  Attributes:
    params: `W1 (784, H)`, `b1 (H,)`, `W2 (H, C)`, `b2 (C,)`, on the device.
    path: the file they were read from.
  """

  params: dict[str, jax.Array]
  path: Path


def check_params(params: dict, source: str = 'params') -> None:
  """Raises `UserError` unless `params` is a 784-H-C network."""
  problem = model.shape_problem(params, INPUT_SIZE)
  if problem:
    raise UserError(
      f'{source} is not a {INPUT_SIZE}-H-C network ({problem}): '
      'pass the --workdir of a run trained on 28x28 images'
    )


def load(workdir: str | Path) -> Classifier:
  """The network of a train workdir (`params.npz`) or a sweep's best (`best_params.npz`).

  Args:
    workdir: the directory; only read.

  Returns:
    The `Classifier`.

  Raises:
    UserError: for an empty or missing workdir, missing or damaged params,
      params that are not finite (a diverged run's), or params that are not a
      784-H-C network.
  """
  directory = workdir_lib.existing(
    workdir, 'pass the --workdir of a train or sweep run'
  )
  path = workdir_lib.params_path(directory)
  params = workdir_lib.load_finite_params(path)
  check_params(params, source=str(path))
  return Classifier(jax.device_put(params), path)


def read_picture(
  file: str | Path | BinaryIO,
  formats: Sequence[str] | None = None,
  max_pixels: int | None = None,
) -> Digit:
  """Opens a picture of one digit and preprocesses it (`preprocess_digit`).

  Args:
    file: a path or a binary file object.
    formats: the PIL formats to accept (e.g. `('PNG', 'JPEG')`); `None`, any.
    max_pixels: refuse larger pictures before decoding them; `None`, PIL's
      own limit.

  Returns:
    The `Digit`.

  Raises:
    READ_ERRORS: for a missing or unreadable file (PIL raises several types
      for broken files); `PictureTooLarge` (a `ValueError`) for a picture over
      `max_pixels`.
  """
  with Image.open(file, formats=formats) as image:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
      raise PictureTooLarge(
        f'the picture has {width}x{height} pixels, over the limit of '
        f'{max_pixels / 1e6:g} megapixels: send a smaller one'
      )
    image.load()
    return preprocess_digit(image)


def warning(digit: Digit) -> str | None:
  """One line saying why `digit` has no digit to see, or `None`."""
  if digit.problem == 'blank':
    return f'no digit to see ({digit.detail}): not classified'
  if digit.problem:
    return f'no single digit to see ({digit.detail})'
  return None


def classify(params: dict, digits: Sequence[Digit]) -> list[dict]:
  """The network's reading of preprocessed pictures, in one batch.

  Args:
    params: a 784-H-C network.
    digits: the preprocessed pictures.

  Returns:
    One dict per digit: `label`, `probability` and `probabilities` (`C`
    floats; all three `None` for a blank picture, which is not classified),
    `flag` (`Digit.problem`), `warning` (one line for a flagged picture, or
    `None`) and `image` (the `(28, 28)` float32 input the model saw).
  """
  results = [
    {
      'label': None,
      'probability': None,
      'probabilities': None,
      'flag': digit.problem,
      'warning': warning(digit),
      'image': digit.image,
    }
    for digit in digits
  ]
  seen = [r for r in results if r['flag'] != 'blank']
  if seen:
    x = np.stack([r['image'] for r in seen]).reshape(len(seen), -1)
    probabilities = np.asarray(jax.nn.softmax(model.apply(params, x)), np.float64)
    for result, row in zip(seen, probabilities, strict=True):
      label = int(np.argmax(row))
      result.update(
        label=label, probability=float(row[label]), probabilities=row.tolist()
      )
      if result['flag']:
        result['warning'] += f'; label {label} is a guess'
  return results


def model_card(classifier: Classifier) -> dict:
  """What a person wants to know about the model, from its workdir's files.

  Args:
    classifier: a loaded `Classifier`; its workdir's `summary.json` and
      `config.json` are read where they exist.

  Returns:
    `{'name', 'workdir', 'params', 'layers', 'val_accuracy',
    'test_accuracy', 'steps', 'options', 'config'}`: `layers` e.g.
    `[784, 300, 10]`, the accuracies and the steps trained `None` where not
    recorded (an adaptive search's pick may have trained fewer steps than
    its config's), `options` the `[field, value]`
    pairs in effect (for a sweep, of its best model), `config` the whole
    config (`{}` without `config.json`).

  Raises:
    UserError: for a damaged `summary.json` or `config.json`.
  """
  directory = classifier.path.parent
  fix = f'run --mode=eval --workdir={directory} to check the workdir'
  summary, config = {}, {}
  if (directory / 'summary.json').is_file():
    summary = workdir_lib.read_json(directory / 'summary.json', fix)
  if (directory / 'config.json').is_file():
    config = workdir_lib.read_json(directory / 'config.json', fix)
  kind = 'sweep' if classifier.path.name == 'best_params.npz' else 'train'
  # A sweep's summary holds its pick under `best` (`mlp.search.outputs`): the
  # swept fields' values, its accuracies and steps, and seed statistics.
  best = summary.get('best') or {}
  scores = best if kind == 'sweep' else summary
  if best and kind == 'sweep':
    # A sweep's config holds the space; its best model is the config with the
    # swept fields set to the pick's values.
    config = {k: v for k, v in config.items() if k != 'sweep'}
    config.update({k: v for k, v in best.items() if k in config})
  params = classifier.params
  return {
    'name': directory.resolve().name
    + (' (best of the sweep)' if kind == 'sweep' else ''),
    'workdir': str(directory),
    'params': classifier.path.name,
    'layers': [INPUT_SIZE, int(params['W1'].shape[1]), int(params['W2'].shape[1])],
    'val_accuracy': scores.get('val_accuracy'),
    'test_accuracy': scores.get('test_accuracy'),
    'steps': scores.get('steps'),
    'options': [list(pair) for pair in report.options_in_effect(config)]
    if config
    else [],
    'config': config,
  }
