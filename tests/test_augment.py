"""Augmentation: exact geometry of the affine helpers, elastic field statistics,
jit/vmap behaviour, and the effect on real MNIST digits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from mlp import augment, data

SIMARD = augment.AugmentConfig(
  rotation_degrees=10,
  scale=0.1,
  shear_degrees=10,
  translation=2,
  elastic_alpha=34,
  elastic_sigma=4,
)
# Half Simard's shift and elastic strength: his full values decorrelate thin strokes
# (mean pixel correlation with the original ~0.48 on test digits).
MODERATE = dataclasses.replace(SIMARD, translation=1, elastic_alpha=17)
jitted_augment = jax.jit(augment.augment, static_argnums=(2, 3))


def warp_one(image: np.ndarray, *affine_args: float) -> np.ndarray:
  """`image` (28, 28) resampled by one deterministic affine map."""
  matrix = augment.affine_matrix(*affine_args)
  coords = augment.affine_source_coords(matrix[None])
  return np.asarray(augment.warp(jnp.asarray(image)[None], coords)[0])


@pytest.fixture(scope='module')
def random_image():
  return np.random.default_rng(0).random((28, 28), dtype=np.float32)


@pytest.fixture(scope='module')
def test_digits(mnist):
  return np.asarray(data.scale_images(mnist.test_images[:256]))


def test_default_config_is_disabled_and_returns_input():
  config = augment.AugmentConfig()
  assert not config.enabled
  assert augment.AugmentConfig(elastic_alpha=1).enabled
  images = jnp.asarray(np.random.default_rng(1).random((4, 784), dtype=np.float32))
  out = jitted_augment(jax.random.key(0), images, config, (28, 28))
  np.testing.assert_array_equal(out, images)


def test_config_is_a_static_argument_and_validated():
  """Equal configs share a compiled program; a different one gets its own."""
  scaled = jax.jit(lambda x, config: x * config.scale, static_argnums=1)
  scaled(jnp.ones(()), SIMARD)
  scaled(jnp.ones(()), dataclasses.replace(SIMARD))  # equal, another object
  assert scaled._cache_size() == 1
  scaled(jnp.ones(()), dataclasses.replace(SIMARD, scale=SIMARD.scale / 2))
  assert scaled._cache_size() == 2
  with pytest.raises(ValueError, match='scale'):
    augment.AugmentConfig(scale=1.5)
  with pytest.raises(ValueError, match='rotation_degrees'):
    augment.AugmentConfig(rotation_degrees=-1)


def test_identity_affine_is_exact(random_image):
  np.testing.assert_array_equal(warp_one(random_image, 0, 1, 0, 0, 0), random_image)


def test_translation_moves_columns(random_image):
  shifted = warp_one(random_image, 0, 1, 0, 2, 0)
  expected = np.roll(random_image, 2, axis=1)
  np.testing.assert_allclose(shifted[:, 2:], expected[:, 2:], atol=1e-6)
  np.testing.assert_array_equal(shifted[:, :2], 0)  # zero padding entered on the left


def test_rotation_by_90_degrees_is_rot90(random_image):
  # Counter-clockwise as displayed, about the centre (13.5, 13.5).
  rotated = warp_one(random_image, 90, 1, 0, 0, 0)
  np.testing.assert_allclose(rotated, np.rot90(random_image), atol=1e-5)


def test_zoom_and_shear_about_the_centre():
  image = np.zeros((28, 28), np.float32)
  image[13:15, 13:15] = 1  # the four pixels around the centre (13.5, 13.5)
  image[13, 20] = 1  # 6.5 px right of the centre, on row 13 (0.5 px above it)
  zoomed = warp_one(image, 0, 2, 0, 0, 0)
  assert zoomed[13, 13] == pytest.approx(1.0)  # the centre stays put
  # Output (13, 26) reads source (13.25, 19.75): 0.75 * 0.75 of pixel (13, 20).
  assert zoomed[13, 26] == pytest.approx(0.5625)
  sheared = warp_one(image, 0, 1, 45, 0, 0)  # x += y - 13.5: row 13 moves 0.5 left
  assert sheared[13, 19] == pytest.approx(0.5)
  assert sheared[13, 20] == pytest.approx(0.5)


def test_smoothing_matrix_matches_scipy():
  impulses = np.eye(28, dtype=np.float32)
  expected = scipy.ndimage.gaussian_filter1d(
    impulses, 4.0, axis=0, mode='constant', truncate=3.0
  )
  np.testing.assert_allclose(
    augment.gaussian_smoothing_matrix(28, 4.0), expected, atol=1e-7
  )


def neighbour_correlation(field: np.ndarray) -> float:
  """Correlation of horizontally adjacent displacements in the image interior."""
  interior = field[..., 6:-6, 6:-6]
  return np.corrcoef(interior[..., :-1].ravel(), interior[..., 1:].ravel())[0, 1]


def test_elastic_field_statistics():
  key = jax.random.key(3)
  shape = (128, 28, 28)
  field = np.asarray(augment.elastic_field(key, shape, 1.0, 4.0))
  assert field.shape == (128, 2, 28, 28)
  tripled = np.asarray(augment.elastic_field(key, shape, 3.0, 4.0))
  np.testing.assert_allclose(tripled.std(), 3 * field.std(), rtol=1e-5)
  # Interior std of smoothed U(-1, 1) noise: sqrt(1/3) * sum of squared 2-D weights.
  kernel = augment.gaussian_smoothing_matrix(28, 4.0)[14]
  expected_std = np.sqrt(1 / 3) * np.sum(kernel**2)
  assert field[..., 12:16, 12:16].std() == pytest.approx(expected_std, rel=0.1)
  assert abs(field.mean()) < 0.1 * field.std()
  rough = np.asarray(augment.elastic_field(key, shape, 1.0, 2.0))
  smooth = np.asarray(augment.elastic_field(key, shape, 1.0, 6.0))
  assert neighbour_correlation(rough) < neighbour_correlation(field)
  assert neighbour_correlation(field) < neighbour_correlation(smooth)
  assert neighbour_correlation(smooth) > 0.95


def test_jit_and_vmap_over_models(test_digits):
  models, batch = 3, 8
  images = jnp.broadcast_to(test_digits[:1], (models, batch, 784))
  keys = jax.random.split(jax.random.key(4), models)
  step = jax.jit(
    jax.vmap(augment.augment, in_axes=(0, 0, None, None)), static_argnums=(2, 3)
  )
  out = np.asarray(step(keys, images, SIMARD, (28, 28)))
  assert out.shape == (models, batch, 784)
  assert out.dtype == np.float32
  assert np.isfinite(out).all()
  assert out.min() >= 0 and out.max() <= 1 + 1e-6
  # Every model and every image draws its own transform of the same digit.
  assert len({image.tobytes() for image in out.reshape(models * batch, 784)}) == 24
  shared = jax.jit(
    jax.vmap(augment.augment, in_axes=(None, 0, None, None)), static_argnums=(2, 3)
  )
  same = np.asarray(shared(keys[0], images, SIMARD, (28, 28)))
  np.testing.assert_allclose(same[0], same[1], atol=1e-6)


def test_translation_draws_stay_in_range(test_digits):
  config = augment.AugmentConfig(translation=3)
  out = np.asarray(jitted_augment(jax.random.key(5), test_digits, config, (28, 28)))

  def centroids(images):
    grid = np.arange(28)
    mass = images.reshape(-1, 28, 28)
    total = mass.sum(axis=(1, 2))
    rows = (mass.sum(axis=2) * grid).sum(axis=1) / total
    cols = (mass.sum(axis=1) * grid).sum(axis=1) / total
    return np.stack([rows, cols], axis=1)

  shifts = centroids(out) - centroids(test_digits)
  assert np.abs(shifts).max() <= 3.01
  assert shifts.std(axis=0) == pytest.approx(np.full(2, 3 / np.sqrt(3)), rel=0.2)


def test_augmented_digits_stay_close_to_originals(test_digits):
  out = np.asarray(jitted_augment(jax.random.key(6), test_digits, MODERATE, (28, 28)))
  centred_in = test_digits - test_digits.mean(axis=1, keepdims=True)
  centred_out = out - out.mean(axis=1, keepdims=True)
  correlation = (centred_in * centred_out).sum(axis=1) / (
    np.linalg.norm(centred_in, axis=1) * np.linalg.norm(centred_out, axis=1)
  )
  assert correlation.mean() > 0.6  # measured ~0.69
  assert correlation.max() < 0.999  # every digit actually changed
  assert np.abs(out - test_digits).max(axis=1).min() > 0.1
  # Mass (ink) is roughly preserved: zoom is within 10%.
  np.testing.assert_allclose(out.sum(), test_digits.sum(), rtol=0.1)


def test_write_examples_png(tmp_path, mnist):
  path = augment.write_examples(
    tmp_path / 'sub' / 'examples.png',
    mnist.test_images,
    mnist.test_labels,
    SIMARD,
    num=3,
    copies=2,
  )
  with Image.open(path) as png:
    assert png.format == 'PNG'
    pixels = np.asarray(png.convert('L'))
  assert pixels.shape[0] > 100 and pixels.shape[1] > 100
  assert pixels.std() > 10  # not blank
