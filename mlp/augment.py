"""On-device data augmentation of flattened digits: random affine plus elastic warps.

`augment(key, images, config)` gives every image of a `(batch, 784)` float batch its
own random transform, drawn inside the jitted training step so nothing leaves the
device:

1. an affine map (rotation, zoom, shear, translation about the image centre) held
   as one 2x3 matrix from an output pixel to the point it samples in the input;
2. an elastic displacement added to those source points (Simard, Steinkraus and
   Platt 2003): uniform(-1, 1) fields for both axes, smoothed by a Gaussian of
   std `elastic_sigma` and scaled by `elastic_alpha`;
3. bilinear resampling at the source points, zero outside the image.

Geometry is in pixels with x = column (rightwards) and y = row (downwards); a
positive angle turns the digit counter-clockwise as displayed, so 90 degrees
matches `np.rot90`. `AugmentConfig` is frozen (hashable) so it can sit in the
static config; a disabled config returns the images without tracing any work.
`write_examples` draws originals beside augmented copies as a PNG for people.
"""

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# Gaussian kernels are cut at this many standard deviations (as in Simard et al.).
TRUNCATE_SIGMAS = 3.0


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Ranges of the random transforms; all zero means no augmentation.

  Attributes:
    rotation_degrees: angle uniform in [-r, r].
    scale: zoom factor uniform in [1 - s, 1 + s] (> 1 enlarges the digit).
    shear_degrees: horizontal shear angle uniform in [-s, s].
    translation: shift in pixels, uniform in [-t, t] per axis.
    elastic_alpha: scale (pixels) of the smoothed elastic displacement field.
    elastic_sigma: std (pixels) of the Gaussian that smooths the random field.
  """

  rotation_degrees: float = 0.0
  scale: float = 0.0
  shear_degrees: float = 0.0
  translation: float = 0.0
  elastic_alpha: float = 0.0
  elastic_sigma: float = 4.0

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if not getattr(self, field.name) >= 0:
        raise ValueError(f'{field.name} must be >= 0, got {getattr(self, field.name)}')
    if self.scale >= 1:
      raise ValueError(f'scale must be < 1 (zoom factor > 0), got {self.scale}')
    if self.shear_degrees >= 90:
      raise ValueError(f'shear_degrees must be < 90, got {self.shear_degrees}')
    if self.elastic_alpha > 0 and self.elastic_sigma <= 0:
      raise ValueError('elastic_sigma must be > 0 when elastic_alpha > 0')

  @property
  def enabled(self) -> bool:
    """Whether any transform is non-zero."""
    return any(
      value > 0
      for value in (
        self.rotation_degrees,
        self.scale,
        self.shear_degrees,
        self.translation,
        self.elastic_alpha,
      )
    )


def from_config(config) -> AugmentConfig:
  """The augmentation a training config asks for (all zero: none)."""
  return AugmentConfig(
    rotation_degrees=float(config.augment_rotation),
    scale=float(config.augment_scale),
    shear_degrees=float(config.augment_shear),
    translation=float(config.augment_translation),
    elastic_alpha=float(config.elastic_alpha),
    elastic_sigma=float(config.elastic_sigma),
  )


def affine_matrix(
  rotation_degrees: jax.Array | float,
  zoom: jax.Array | float,
  shear_degrees: jax.Array | float,
  shift_x: jax.Array | float,
  shift_y: jax.Array | float,
  image_shape: tuple[int, int] = (28, 28),
) -> jax.Array:
  """The output-to-source map of one affine transform about the image centre.

  The digit is zoomed, sheared (x += tan(shear) * y), rotated counter-clockwise,
  then shifted by (shift_x, shift_y) pixels; the matrix returned is the inverse of
  that, which is what resampling needs.

  Args:
    rotation_degrees: scalar angle.
    zoom: scalar zoom factor, > 0.
    shear_degrees: scalar shear angle, in (-90, 90).
    shift_x: scalar shift in pixels, rightwards.
    shift_y: scalar shift in pixels, downwards.
    image_shape: (rows, cols).

  Returns:
    `(2, 3)` float32 `M` with `[x_src, y_src] = M[:, :2] @ [x, y] + M[:, 2]` for an
    output pixel at column x, row y.
  """
  angle = jnp.deg2rad(jnp.asarray(rotation_degrees, jnp.float32))
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  tan_shear = jnp.tan(jnp.deg2rad(jnp.asarray(shear_degrees, jnp.float32)))
  # Inverse of rotate @ shear @ zoom: zoom^-1 @ shear^-1 @ rotate^-1.
  unrotate = jnp.array([[cos, -sin], [sin, cos]])
  unshear = jnp.array([[1.0, -tan_shear], [0.0, 1.0]])
  linear = (unshear @ unrotate) / zoom
  centre = jnp.array([(image_shape[1] - 1) / 2, (image_shape[0] - 1) / 2], jnp.float32)
  shift = jnp.stack([shift_x, shift_y]).astype(jnp.float32)
  offset = centre - linear @ (centre + shift)
  return jnp.concatenate([linear, offset[:, None]], axis=1)


def affine_source_coords(
  matrices: jax.Array, image_shape: tuple[int, int] = (28, 28)
) -> jax.Array:
  """Source points of every output pixel under each affine map.

  Args:
    matrices: `(batch, 2, 3)` output-to-source maps from `affine_matrix`.
    image_shape: (rows, cols) = (H, W).

  Returns:
    `(batch, 2, H, W)` float32 source (row, col) coordinates.
  """
  rows, cols = jnp.meshgrid(
    jnp.arange(image_shape[0], dtype=jnp.float32),
    jnp.arange(image_shape[1], dtype=jnp.float32),
    indexing='ij',
  )
  xy1 = jnp.stack([cols, rows, jnp.ones_like(rows)])  # (3, H, W)
  source_xy = jnp.einsum('bij,jhw->bihw', matrices, xy1)
  return source_xy[:, ::-1]  # (x, y) -> (row, col)


def gaussian_smoothing_matrix(size: int, sigma: float) -> np.ndarray:
  """A 1-D Gaussian convolution (zero padded, 'same' size) as a matrix.

  Args:
    size: length of the signal.
    sigma: std of the Gaussian in samples, > 0 (a static Python number).

  Returns:
    `(size, size)` float32 `K` with `K @ signal` the smoothed signal; the kernel
    sums to 1 and is cut at `TRUNCATE_SIGMAS * sigma`, like
    `scipy.ndimage.gaussian_filter1d(..., mode='constant', truncate=3)`.
  """
  radius = int(TRUNCATE_SIGMAS * sigma + 0.5)
  taps = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 * (taps / sigma) ** 2)
  kernel /= kernel.sum()
  distance = np.arange(size)[:, None] - np.arange(size)[None, :]
  matrix = np.where(
    np.abs(distance) <= radius, kernel[np.clip(distance + radius, 0, 2 * radius)], 0
  )
  return matrix.astype(np.float32)


def elastic_field(
  key: jax.Array, shape: tuple[int, ...], alpha: jax.Array | float, sigma: float
) -> jax.Array:
  """Random smooth displacement fields (Simard et al. 2003).

  Uniform(-1, 1) noise per pixel and axis, convolved with a Gaussian of std `sigma`
  along rows then columns (zero padded; done as two small matrix products, which
  XLA runs faster on CPU than a 25-tap convolution), times `alpha`.

  Args:
    key: a `jax.random.key`.
    shape: `(*batch, H, W)`.
    alpha: displacement scale in pixels (may be traced).
    sigma: smoothing std in pixels, > 0 (static: it fixes the kernel).

  Returns:
    `(*batch, 2, H, W)` float32 displacements in pixels, (row, col) along axis -3.
  """
  *batch, height, width = shape
  noise = _uniform_noise(key, (*batch, 2, height, width))
  smooth_rows = gaussian_smoothing_matrix(height, sigma)
  smooth_cols = gaussian_smoothing_matrix(width, sigma)
  smoothed = jnp.einsum('ij,...jk,lk->...il', smooth_rows, noise, smooth_cols)
  return alpha * smoothed


def _uniform_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform(-1, 1) noise of `shape` on 256 levels, mean 0, variance ~1/3.

  Threefry costs the same per draw whatever the bit width, so four bytes of each
  32-bit draw make this ~4x cheaper on CPU than `jax.random.uniform` (the
  elastic field's noise was most of `augment`'s time). After the Gaussian
  smoothing the 1/128 quantization step is invisible.
  """
  size = math.prod(shape)
  words = jax.random.bits(key, (-(-size // 4),), jnp.uint32)
  levels = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:size]
  return ((levels.astype(jnp.float32) + 0.5) / 128 - 1).reshape(shape)


def warp(images: jax.Array, source_coords: jax.Array) -> jax.Array:
  """Bilinear resampling of each image at its source points, zero outside.

  A hand-written gather of the four neighbours; it gives the same values as
  `jax.scipy.ndimage.map_coordinates(order=1, mode='constant')` vmapped over the
  batch (to 2e-7), and `augment` built on it runs faster than one built on
  `map_coordinates` under jit on a CPU.

  Args:
    images: `(batch, H, W)` float.
    source_coords: `(batch, 2, H, W)` (row, col) point sampled by each output pixel.

  Returns:
    `(batch, H, W)`, same dtype as `images`.
  """
  batch, height, width = images.shape
  flat_images = images.reshape(batch, height * width)
  rows = source_coords[:, 0].reshape(batch, -1)
  cols = source_coords[:, 1].reshape(batch, -1)
  row0, col0 = jnp.floor(rows), jnp.floor(cols)
  row_frac, col_frac = rows - row0, cols - col0
  row0, col0 = row0.astype(jnp.int32), col0.astype(jnp.int32)
  result = jnp.zeros_like(flat_images)
  for row_step, row_weight in ((0, 1 - row_frac), (1, row_frac)):
    for col_step, col_weight in ((0, 1 - col_frac), (1, col_frac)):
      row, col = row0 + row_step, col0 + col_step
      inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
      index = jnp.clip(row, 0, height - 1) * width + jnp.clip(col, 0, width - 1)
      values = jnp.take_along_axis(flat_images, index, axis=1)
      result += jnp.where(inside, row_weight * col_weight * values, 0)
  return result.reshape(batch, height, width).astype(images.dtype)


def _random_affine_matrices(
  key: jax.Array, batch: int, config: AugmentConfig, image_shape: tuple[int, int]
) -> jax.Array:
  """`(batch, 2, 3)` output-to-source maps with parameters drawn from `config`."""
  ranges = jnp.array(
    [
      config.rotation_degrees,
      config.scale,
      config.shear_degrees,
      config.translation,
      config.translation,
    ],
    jnp.float32,
  )
  draws = ranges * jax.random.uniform(key, (batch, 5), minval=-1.0, maxval=1.0)
  rotation, zoom_change, shear, shift_x, shift_y = draws.T
  return jax.vmap(affine_matrix, in_axes=(0, 0, 0, 0, 0, None))(
    rotation, 1 + zoom_change, shear, shift_x, shift_y, image_shape
  )


def augment(
  key: jax.Array,
  images: jax.Array,
  config: AugmentConfig,
  image_shape: tuple[int, int] = (28, 28),
) -> jax.Array:
  """Each image warped by its own random affine and elastic transform.

  Works under `jax.jit` (with `config` and `image_shape` static) and `jax.vmap`
  (e.g. over a model axis, with per-model keys or one shared key).

  Args:
    key: a `jax.random.key`; use a different one every step.
    images: `(batch, H * W)` float, flattened row-major, in [0, 1].
    config: the transform ranges (static).
    image_shape: (H, W) (static).

  Returns:
    `(batch, H * W)`, same dtype; `images` itself when `config` is disabled.
  """
  if not config.enabled:
    return images
  batch = images.shape[0]
  affine_key, elastic_key = jax.random.split(key)
  matrices = _random_affine_matrices(affine_key, batch, config, image_shape)
  source_coords = affine_source_coords(matrices, image_shape)
  if config.elastic_alpha > 0:
    source_coords += elastic_field(
      elastic_key, (batch, *image_shape), config.elastic_alpha, config.elastic_sigma
    )
  warped = warp(images.reshape(batch, *image_shape), source_coords)
  return warped.reshape(images.shape)


def write_examples(
  path: str | Path,
  images_uint8: np.ndarray,
  labels: np.ndarray,
  config: AugmentConfig,
  num: int = 8,
  copies: int = 5,
  seed: int = 0,
) -> Path:
  """A PNG grid: one row per digit, the original then `copies` augmented versions.

  Args:
    path: where to write the PNG (parent folders are created).
    images_uint8: `(N, H * W)` uint8 digits; the first `num` are drawn.
    labels: `(N,)` int labels, shown as the title of each original.
    config: the augmentation to show.
    num: digits (rows).
    copies: augmented versions per digit (columns after the original).
    seed: seed of the augmentation key.

  Returns:
    `path` as a `Path`.
  """
  # Imported here: the training step imports this module and never draws.
  from mlp import data, plots

  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  side = math.isqrt(images_uint8.shape[1])
  image_shape = (side, side)
  originals = np.asarray(data.scale_images(images_uint8[:num]))
  keys = jax.random.split(jax.random.key(seed), copies)
  augment_copies = jax.jit(
    jax.vmap(augment, in_axes=(0, None, None, None)), static_argnums=(2, 3)
  )
  augmented = np.asarray(augment_copies(keys, originals, config, image_shape))
  fig = plots.new_figure(0.9 * (1 + copies) + 0.2, 0.95 * len(originals) + 0.6)
  fig.suptitle(_describe(config), fontsize=8)
  axes = fig.subplots(len(originals), 1 + copies, squeeze=False)
  for row, original in enumerate(originals):
    tiles = [original, *augmented[:, row]]
    for column, tile in enumerate(tiles):
      ax = axes[row, column]
      ax.imshow(tile.reshape(image_shape), cmap='gray', vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
    axes[row, 0].set_title(f'label {labels[row]}', fontsize=8)
  return plots.save_figure(fig, path)


def _describe(config: AugmentConfig) -> str:
  """One line for a figure title: the non-zero ranges of `config`."""
  parts = [
    f'rotation ±{config.rotation_degrees:g}°' if config.rotation_degrees else '',
    f'zoom ±{config.scale:g}' if config.scale else '',
    f'shear ±{config.shear_degrees:g}°' if config.shear_degrees else '',
    f'shift ±{config.translation:g} px' if config.translation else '',
    f'elastic α={config.elastic_alpha:g} σ={config.elastic_sigma:g}'
    if config.elastic_alpha
    else '',
  ]
  return 'original, then augmented: ' + (', '.join(p for p in parts if p) or 'none')
