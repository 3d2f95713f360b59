"""`--mode=predict`: classify image files of digits with a trained workdir's params.

Any image is first turned into what MNIST's creators made of their scans
(`preprocess`): grayscale, white ink on black, the ink's bounding box scaled to
fit 20x20 keeping its aspect ratio (antialiased), pasted into a 28x28 field with
its centre of mass at the centre. A photo of a digit on paper, a drawing on a
transparent canvas and an MNIST image itself all end up alike.
"""

import glob
import json
import os
import sys
from pathlib import Path
from typing import TextIO

import jax
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlp import model
from mlp import workdir as workdir_lib
from mlp.errors import UserError

IMAGE_SHAPE = (28, 28)
BOX_SIZE = 20  # MNIST's digits fit a 20x20 box inside the 28x28 field.
INK_THRESHOLD = 0.1  # Fainter pixels (relative to the brightest) are background.
_GLOB_CHARS = frozenset('*?[')


def _grayscale(image: Image.Image) -> np.ndarray:
  """`(rows, cols)` float64 in [0, 1]; transparency becomes the paper's colour."""
  image = ImageOps.exif_transpose(image)  # photos taken sideways
  if 'A' in image.getbands() or 'transparency' in image.info:
    rgba = image.convert('RGBA')
    alpha = np.asarray(rgba.getchannel('A'), np.float64) / 255
    gray = np.asarray(rgba.convert('L'), np.float64) / 255
    opaque = alpha > 0.5
    # Dark ink on a transparent canvas goes onto white paper, light ink onto black.
    paper = 1.0 if not opaque.any() or gray[opaque].mean() < 0.5 else 0.0
    return gray * alpha + paper * (1 - alpha)
  if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
    gray = np.asarray(image, np.float64)
  else:
    gray = np.asarray(image.convert('L'), np.float64)
  low, high = gray.min(), gray.max()
  return (gray - low) / (high - low) if high > low else np.zeros_like(gray)


def preprocess(image: Image.Image) -> np.ndarray:
  """Turns a picture of one digit into an MNIST-like image.

  Args:
    image: any PIL image of a single digit, dark on light or light on dark.

  Returns:
    `(28, 28)` float32 in [0, 1], white digit on black, its bounding box fitted
    to 20x20 and its centre of mass at pixel (14, 14) as in MNIST; all zeros
    for an image without ink.
  """
  gray = _grayscale(image)
  border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
  if np.median(border) > 0.5:  # light paper: MNIST's ink is the bright part
    gray, border = 1 - gray, 1 - border
  ink = np.clip(gray - np.median(border), 0, None)
  result = np.zeros(IMAGE_SHAPE, np.float32)
  if ink.max() <= 0:
    return result
  ink /= ink.max()
  ink[ink < INK_THRESHOLD] = 0  # paper texture and sensor noise
  rows = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=1))
  cols = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=0))
  crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
  scale = BOX_SIZE / max(crop.shape)
  height = max(1, round(crop.shape[0] * scale))
  width = max(1, round(crop.shape[1] * scale))
  resized = Image.fromarray(crop.astype(np.float32)).resize(
    (width, height), Image.Resampling.LANCZOS
  )
  digit = np.clip(np.asarray(resized), 0, None)  # Lanczos rings below zero
  digit = np.clip(digit / digit.max(), 0, 1) if digit.max() > 0 else digit
  mass = digit.sum()
  center_row = (digit.sum(axis=1) @ np.arange(height)) / mass
  center_col = (digit.sum(axis=0) @ np.arange(width)) / mass
  top = int(np.clip(round(IMAGE_SHAPE[0] / 2 - center_row), 0, IMAGE_SHAPE[0] - height))
  left = int(np.clip(round(IMAGE_SHAPE[1] / 2 - center_col), 0, IMAGE_SHAPE[1] - width))
  result[top : top + height, left : left + width] = digit
  return result


def expand_paths(spec: str) -> list[str]:
  """Comma-separated paths and globs -> paths, in order, without repeats.

  A glob that matches nothing and a path that does not exist are kept as
  given, so that `predict` reports each as an error of its own.

  Args:
    spec: e.g. `'digit.png,photos/*.jpg'` (`~` and `**` are expanded).

  Returns:
    The paths.

  Raises:
    UserError: if `spec` names no path at all.
  """
  paths = []
  for item in (part.strip() for part in spec.split(',')):
    if not item:
      continue
    item = os.path.expanduser(item)
    matches = sorted(glob.glob(item, recursive=True)) if _GLOB_CHARS & set(item) else []
    paths += matches or [item]
  if not paths:
    raise UserError(
      '--images is empty: pass image files, e.g. --images=digit.png,photos/*.jpg'
    )
  return list(dict.fromkeys(paths))


def check_params(params: dict, source: str = 'params') -> None:
  """Raises `UserError` unless `params` is a 784-H-C network."""
  problem = model.shape_problem(params, IMAGE_SHAPE[0] * IMAGE_SHAPE[1])
  if problem:
    raise UserError(
      f'{source} is not a {IMAGE_SHAPE[0] * IMAGE_SHAPE[1]}-H-C network ({problem}): '
      'pass the --workdir of a run trained on 28x28 images'
    )


def _read_error(path: str, error: Exception) -> str:
  """A one-line reason why `path` could not be read as an image."""
  if isinstance(error, FileNotFoundError):
    return 'no file matches this pattern' if _GLOB_CHARS & set(path) else 'no such file'
  if isinstance(error, IsADirectoryError):
    return f'is a directory: pass the images in it, e.g. {path.rstrip("/")}/*.png'
  if isinstance(error, UnidentifiedImageError):
    return 'not an image file that PIL can read'
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  return ' '.join(str(error).split()) or type(error).__name__


def load_image(path: str) -> np.ndarray:
  """The preprocessed `(28, 28)` image of the file at `path`."""
  with Image.open(path) as image:
    image.load()
    return preprocess(image)


def predict(params: dict, paths: list[str]) -> list[dict]:
  """Classifies each image file.

  Args:
    params: a 784-H-C network (`W1 (784, H)`, `b1 (H,)`, `W2 (H, C)`, `b2 (C,)`).
    paths: image files.

  Returns:
    One dict per path, in order: `{'path', 'label', 'probability',
    'probabilities'}` (`C` floats) for a readable image, `{'path', 'error'}`
    (one line) for a missing or unreadable one.

  Raises:
    UserError: if `params` is not a 784-H-C network.
  """
  check_params(params)
  results, images = [], []
  for path in paths:
    try:
      images.append(load_image(path))
      results.append({'path': path})
    # PIL raises more than OSError for broken files (e.g. SyntaxError, ValueError).
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
      results.append({'path': path, 'error': _read_error(path, e)})
  if images:
    x = np.stack(images).reshape(len(images), -1)
    probabilities = np.asarray(jax.nn.softmax(model.apply(params, x)), np.float64)
    readable = [r for r in results if 'error' not in r]
    for result, row in zip(readable, probabilities, strict=True):
      label = int(np.argmax(row))
      result.update(
        label=label, probability=float(row[label]), probabilities=row.tolist()
      )
  return results


def run(
  workdir: str,
  images: str,
  as_json: bool,
  out: TextIO = sys.stdout,
  err: TextIO = sys.stderr,
) -> int:
  """`--mode=predict`: prints the class of each image.

  Writes one line `path<TAB>label<TAB>probability` per readable image to `out`
  (with `as_json`, a JSON list of `{'path', 'label', 'probability',
  'probabilities'}` instead), then one line `Error: <path>: <reason>` per
  missing or unreadable image to `err`.

  Args:
    workdir: a train workdir (`params.npz`) or a sweep workdir (`best_params.npz`).
    images: comma-separated image paths and globs.
    as_json: print JSON instead of tab-separated lines.
    out: where the predictions go.
    err: where the per-image errors go.

  Returns:
    The exit code: 0 if every image was read, 1 otherwise.

  Raises:
    UserError: for an empty `images`, a missing workdir or params, or params
      that are not a 784-H-C network.
  """
  paths = expand_paths(images)
  directory = Path(workdir)
  if not directory.is_dir():
    raise UserError(
      f'workdir {directory} does not exist: pass the --workdir of a train or sweep run'
    )
  path = workdir_lib.params_path(directory)
  params = workdir_lib.load_params(path)
  check_params(params, source=str(path))
  results = predict(params, paths)
  readable = [r for r in results if 'error' not in r]
  if as_json:
    json.dump(readable, out, indent=2)
    out.write('\n')
  else:
    for r in readable:
      out.write(f'{r["path"]}\t{r["label"]}\t{r["probability"]:.4f}\n')
  out.flush()
  failed = [r for r in results if 'error' in r]
  for r in failed:
    err.write(f'Error: {r["path"]}: {r["error"]}\n')
  err.flush()
  return 1 if failed else 0
