"""`--mode=predict`: classify image files of digits with a trained workdir's params.

Any picture is first turned into what MNIST's creators made of their scans
(`mlp.digit_image`): the background normalised, page lines and specks
dropped, the digit's ink fitted to 20x20 and centred in a 28x28 field. A
photo of a digit on paper or a board, a drawing on a transparent canvas and an
MNIST image itself all end up alike. A picture without a digit to see (blank,
mostly ink, or two digits side by side) is flagged, not just labelled.
"""

import glob
import os
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mlp import classifier
from mlp import workdir as workdir_lib
from mlp.digit_image import preprocess
from mlp.errors import UserError

__all__ = ['expand_paths', 'predict', 'preprocess', 'run']
_GLOB_CHARS = frozenset('*?[')


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


def predict(params: dict, paths: list[str]) -> list[dict]:
  """Classifies each image file.

  Args:
    params: a 784-H-C network (`W1 (784, H)`, `b1 (H,)`, `W2 (H, C)`, `b2 (C,)`).
    paths: image files.

  Returns:
    One dict per path, in order. A readable picture: `path` and what
    `classifier.classify` says of it (`label`, `probability`,
    `probabilities`, `flag`, `warning`, `image`). A missing or unreadable
    file: `{'path', 'error'}` (one line).

  Raises:
    UserError: if `params` is not a 784-H-C network.
  """
  classifier.check_params(params)
  results, digits = [], []
  for path in paths:
    try:
      digits.append(classifier.read_picture(path))
    except classifier.READ_ERRORS as e:
      results.append({'path': path, 'error': _read_error(path, e)})
      continue
    results.append({'path': path})
  readable = [r for r in results if 'error' not in r]
  for result, seen in zip(readable, classifier.classify(params, digits), strict=True):
    result.update(seen)
  return results


def save_images(results: list[dict], directory: str) -> None:
  """Writes each readable picture's model input as `DIRECTORY/NAME.png` (28x28,
  8-bit; NAME the file's name without its suffix, numbered if repeated)."""
  target = Path(directory)
  try:
    target.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(
      f'cannot create --save_preprocessed={directory}: {e.strerror}; pass another '
      'directory'
    ) from None
  used: set[str] = set()
  for result in results:
    if 'image' not in result:
      continue
    stem = Path(result['path']).stem
    name, number = stem, 1
    while name in used:
      number += 1
      name = f'{stem}-{number}'
    used.add(name)
    pixels = np.round(result['image'] * 255).astype(np.uint8)
    with workdir_lib.atomic_open(target / f'{name}.png', 'wb') as f:
      Image.fromarray(pixels).save(f, format='PNG')


def run(
  workdir: str,
  images: str,
  as_json: bool,
  out: TextIO | None = None,
  err: TextIO | None = None,
  save_preprocessed: str | None = None,
) -> int:
  """`--mode=predict`: prints the class of each image.

  Writes one line `path<TAB>label<TAB>probability` per readable image to `out`
  (`-` for both where a blank picture has no digit to classify; with
  `as_json`, a JSON list of `{'path', 'label', 'probability',
  'probabilities', 'flag', 'warning'}` instead), then to `err` one line
  `Warning: <path>: <why>` per flagged picture and one line
  `Error: <path>: <reason>` per missing or unreadable image.

  Args:
    workdir: a train workdir (`params.npz`) or a sweep workdir (`best_params.npz`).
    images: comma-separated image paths and globs.
    as_json: print JSON instead of tab-separated lines.
    out: where the predictions go (`None`: `sys.stdout` at the call).
    err: where the warnings and per-image errors go (`None`: `sys.stderr`).
    save_preprocessed: a directory for the 28x28 images the model saw.

  Returns:
    The exit code: 0 if every image was read, 1 otherwise.

  Raises:
    UserError: for an empty `images`, a missing workdir or params, params
      that are not a 784-H-C network, or an unusable `save_preprocessed`.
  """
  out = sys.stdout if out is None else out
  err = sys.stderr if err is None else err
  paths = expand_paths(images)
  results = predict(classifier.load(workdir).params, paths)
  if save_preprocessed:
    save_images(results, save_preprocessed)
  readable = [r for r in results if 'error' not in r]
  if as_json:
    fields = ('path', 'label', 'probability', 'probabilities', 'flag', 'warning')
    rows = [{k: r[k] for k in fields} for r in readable]
    out.write(workdir_lib.dumps_json(rows, indent=2) + '\n')
  else:
    for r in readable:
      probability = '-' if r['probability'] is None else f'{r["probability"]:.4f}'
      label = '-' if r['label'] is None else r['label']
      out.write(f'{r["path"]}\t{label}\t{probability}\n')
  out.flush()
  for r in readable:
    if r['warning']:
      err.write(f'Warning: {r["path"]}: {r["warning"]}\n')
  failed = [r for r in results if 'error' in r]
  for r in failed:
    err.write(f'Error: {r["path"]}: {r["error"]}\n')
  err.flush()
  return 1 if failed else 0
