"""Shared fixtures: absl flags parsed, MNIST loaded once per session."""

import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

# absl-flag code (config_flags, logging) expects parsed flags; pytest owns argv.
flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """`main.py` runs cache compiled programs in a session folder, not in ~/.cache."""
  directory = tmp_path_factory.mktemp('xdg_cache')
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('XDG_CACHE_HOME', str(directory))
    yield directory / 'mlp-jax'


@pytest.fixture(scope='session')
def mnist():
  """The vendored MNIST splits (host NumPy arrays)."""
  from mlp import data

  return data.load_dataset('mnist')


@pytest.fixture(scope='session')
def data():
  """A small learnable problem: class c lights up the c-th group of 4 pixels."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 128).astype(np.int32)
  images = rng.integers(0, 120, (128, 3, 4))
  images[np.arange(128), labels] += 120
  images = images.reshape(128, 12).astype(np.uint8)
  from mlp import train

  return train.DeviceData(
    jnp.asarray(images[:96]),
    jnp.asarray(labels[:96]),
    jnp.asarray(images[96:]),
    jnp.asarray(labels[96:]),
  )
