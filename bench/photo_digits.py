"""Photo-like pictures of MNIST digits, made here, for predict's tests and bench.

`photo(digit, style, seed)` draws a 28x28 MNIST digit the way a camera would
see it on real paper: uneven lighting, ruled or squared paper, a noisy grey
page, chalk on a dark board, or a small digit somewhere in a large picture.
`clean` is a plain rendering: dark ink on white paper.

  .venv/bin/python bench/photo_digits.py docs/samples   # the README's samples
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

STYLES = ('clean', 'uneven', 'ruled', 'squared', 'noise', 'chalk', 'small')


def _ink(
  digit: np.ndarray, size: int, rng: np.random.Generator, pen: bool = True
) -> np.ndarray:
  """The digit's coverage in [0, 1], `(size, size)`, slightly rotated; with
  `pen`, its strokes thinned to between a half and a fifth of MNIST's (a pen
  on paper draws thinner lines, for the size of the digit, than MNIST's)."""
  image = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
  image = image.rotate(rng.uniform(-8, 8), Image.Resampling.BICUBIC)
  if pen:
    stroke = size / 28 * 2.5  # MNIST's strokes, about 2.5 of 28 pixels
    half = int(stroke * rng.uniform(0.25, 0.4))
    if half:
      image = image.filter(ImageFilter.MinFilter(2 * half + 1))
  return np.clip(np.asarray(image, np.float64) / 255, 0, 1)


def _place(shape, ink: np.ndarray, rng, spread: float) -> np.ndarray:
  """`ink` on a zero page of `shape`, near the centre (off by up to `spread`)."""
  page = np.zeros(shape)
  size = ink.shape[0]
  room_r, room_c = shape[0] - size, shape[1] - size
  top = int(np.clip(room_r / 2 + rng.uniform(-spread, spread) * room_r / 2, 0, room_r))
  left = int(np.clip(room_c / 2 + rng.uniform(-spread, spread) * room_c / 2, 0, room_c))
  page[top : top + size, left : left + size] = ink
  return page


def _lighting(shape, rng, low: float) -> np.ndarray:
  """A smooth light field from `low` on one side of the page to 1 on the other."""
  rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
  angle = rng.uniform(0, 2 * np.pi)
  ramp = np.cos(angle) * rows / shape[0] + np.sin(angle) * cols / shape[1]
  ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
  return low + (1 - low) * ramp


def _to_image(gray: np.ndarray, tint=(1.0, 1.0, 1.0)) -> Image.Image:
  rgb = np.clip(gray[..., None] * np.asarray(tint), 0, 1)
  return Image.fromarray((rgb * 255).round().astype(np.uint8), 'RGB')


def photo(digit: np.ndarray, style: str, seed: int = 0) -> Image.Image:
  """A picture of `digit` (28x28 uint8, white on black, as in MNIST).

  Args:
    digit: an MNIST image.
    style: one of `STYLES`.
    seed: the picture's random choices (placement, lighting, noise).

  Returns:
    An RGB picture, dark ink on paper or (for `chalk`) light on a dark board.
  """
  rng = np.random.default_rng(seed)
  noise = rng.normal(0, 0.02, (1, 1))  # overwritten where a style has its own
  if style == 'small':
    shape = (900, 1200)
    ink = _place(shape, _ink(digit, int(rng.uniform(70, 110)), rng), rng, 0.7)
  else:
    shape = (240, 240)
    size = int(rng.uniform(150, 190))
    ink = _place(shape, _ink(digit, size, rng, pen=style != 'clean'), rng, 0.4)
  paper = np.full(shape, 0.9)
  if style in ('ruled', 'squared'):
    spacing = int(rng.uniform(22, 32))
    offset = int(rng.uniform(0, spacing))
    lines = np.zeros(shape, bool)
    lines[offset::spacing, :] = True
    if style == 'squared':
      lines[:, offset::spacing] = True
    else:
      lines[:, int(shape[1] * 0.12)] = True  # the margin line
    width = int(rng.integers(1, 3))
    lines = np.asarray(
      Image.fromarray(lines.astype(np.uint8) * 255).filter(
        ImageFilter.MaxFilter(2 * width - 1)
      ),
      bool,
    )
    paper = np.where(lines, 0.55, paper)
  if style == 'noise':
    paper = np.full(shape, 0.6)
  reflectance = paper * (1 - ink) + 0.08 * ink
  if style == 'chalk':
    grain = np.clip(rng.normal(0.8, 0.25, shape), 0.2, 1)
    smudge = np.asarray(
      Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).resize(
        shape[::-1], Image.Resampling.BICUBIC
      ),
      np.float64,
    )
    board = 0.12 + 0.08 * smudge / 255
    reflectance = board * (1 - ink) + 0.85 * grain * ink
  light = _lighting(shape, rng, 0.25 if style == 'uneven' else 0.8)
  if style == 'uneven':  # and the sharp shadow of the camera across a corner
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    edge = rng.uniform(0.6, 1.0) * (shape[0] + shape[1])
    light = np.where(rows + cols > edge, 0.55 * light, light)
  gray = light * reflectance
  sigma = {'noise': 0.08, 'chalk': 0.04, 'small': 0.03}.get(style, 0.015)
  noise = rng.normal(0, sigma, shape)
  if style == 'noise':  # specks of dust and sensor noise
    specks = rng.random(shape) < 0.004
    noise = np.where(specks, rng.uniform(-0.5, 0.3, shape), noise)
  gray = (
    np.asarray(
      Image.fromarray(((gray + noise).clip(0, 1) * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(0.7)
      ),
      np.float64,
    )
    / 255
  )
  tint = {'ruled': (0.95, 0.97, 1.0), 'chalk': (0.85, 1.0, 0.9)}.get(style, (1, 1, 1))
  return _to_image(gray, tint)


def main(directory: str) -> None:
  """Writes one sample of each style, of MNIST test digits, as JPEG."""
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  from mlp import data

  mnist = data.load_dataset('mnist')
  out = Path(directory)
  out.mkdir(parents=True, exist_ok=True)
  for i, style in enumerate(STYLES):
    digit = mnist.test_images[i].reshape(28, 28)
    label = int(mnist.test_labels[i])
    photo(digit, style, seed=i).save(out / f'{style}_{label}.jpg', quality=90)


if __name__ == '__main__':
  main(sys.argv[1] if len(sys.argv) > 1 else 'docs/samples')
