"""Shared fixtures: absl flags parsed, MNIST loaded once per session."""

import pytest
from absl import flags

# absl-flag code (config_flags, logging) expects parsed flags; pytest owns argv.
flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope='session')
def mnist():
  """The vendored MNIST splits (host NumPy arrays)."""
  from mlp import data

  return data.load_dataset('mnist')
