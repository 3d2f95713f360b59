"""Shared test helpers: the CPU backend, parsed flags, data, factories, `main.py`.

Every test runs on the CPU backend, in this process and in every `main.py`
subprocess (`run_main`, `start_main`), whatever accelerator the machine has,
so results compare exactly with the ones the tests were written against.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ['JAX_PLATFORMS'] = 'cpu'  # before JAX is imported, here and in children

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

from mlp import hparams  # noqa: E402
from mlp.step import core  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# absl-flag code (config_flags, logging) expects parsed flags; pytest owns argv.
flags.FLAGS.mark_as_parsed()

# A tiny program for the step and loop tests: 12 inputs, 8 hidden units,
# 3 classes, 96 training images (6 steps an epoch), evaluations every 10 steps.
STATIC = core.Static(
  input_size=12,
  hidden_size=8,
  num_classes=3,
  batch_size=16,
  num_train=96,
  max_iters=40,
  eval_every=10,
  train_eval_size=48,
)


def make_hparams(**values) -> hparams.Hyperparams:
  """One model's hyperparameters: the table's defaults, tuned for `STATIC`."""
  tiny = {'learning_rate': 0.5, 'lr_decay': 0.9, 'l2_reg': 1e-3, 'init_std': 0.1}
  return hparams.make(**{'num_iters': STATIC.max_iters, **tiny, **values})


def stack(*models: hparams.Hyperparams) -> hparams.Hyperparams:
  """Every field stacked along a new model axis."""
  return jax.tree.map(lambda *xs: np.stack(xs), *models)


def main_command(*args: str) -> list[str]:
  return [sys.executable, 'main.py', *args]


def child_env(env: dict | None = None) -> dict:
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})}


def run_main(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs `main.py ARGS` to its end on the CPU backend; output captured."""
  return subprocess.run(
    main_command(*args),
    cwd=REPO,
    capture_output=True,
    text=True,
    env=child_env(env),
    timeout=300,
  )


def start_main(*args: str, env: dict | None = None) -> subprocess.Popen:
  """Starts `main.py ARGS` on the CPU backend; the caller waits for it."""
  return subprocess.Popen(
    main_command(*args),
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=child_env(env),
  )


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith('Error:')]


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
  return core.DeviceData(
    jnp.asarray(images[:96]),
    jnp.asarray(labels[:96]),
    jnp.asarray(images[96:]),
    jnp.asarray(labels[96:]),
  )
