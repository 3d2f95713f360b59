"""Shared test helpers: the CPU backend, parsed flags, data, factories, `main.py`.

Every test runs on the CPU backend, in this process and in every `main.py`
subprocess (`run_main`, `start_main`), whatever accelerator the machine has,
so results compare exactly with the ones the tests were written against; XLA
compiles at optimisation level 0 unless MLP_TEST_XLA_DEFAULT is set (below).
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ['JAX_PLATFORMS'] = 'cpu'  # before JAX is imported, here and in children
# Most of the suite's CPU time is XLA compiling its many small programs, each
# once, and most of that is LLVM optimising them: at optimisation level 0 they
# compile in about half the time. Their results differ from the optimised
# build's in the last bits only, and every comparison here is between
# programs built alike. `.ci/run` runs the suite again at XLA's default
# level, the one users' runs compile at (MLP_TEST_XLA_DEFAULT=1).
_FAST_COMPILE = '--xla_backend_optimization_level=0'
_xla_flags = os.environ.get('XLA_FLAGS', '')
if not os.environ.get('MLP_TEST_XLA_DEFAULT') and _FAST_COMPILE not in _xla_flags:
  os.environ['XLA_FLAGS'] = f'{_xla_flags} {_FAST_COMPILE}'.strip()

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


class CompileCounter:
  """Counts JAX's compile events (tracing, lowering, XLA compiling) in a `with`."""

  def __init__(self):
    self.events: list[str] = []

  def __call__(self, event: str, duration: float, **kwargs) -> None:
    if event.startswith('/jax/core/compile/'):
      self.events.append(event)

  def lowerings(self) -> int:
    """Programs lowered to XLA (one per jit cache miss)."""
    return self.events.count('/jax/core/compile/jaxpr_to_mlir_module_duration')

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self)


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith('Error:')]


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """Compiled programs are cached in a folder of this test session, not in ~/.cache.

  `main.py` runs find it through `XDG_CACHE_HOME`; this process uses it too,
  and so do the other workers of `pytest -n`, so a program that several tests
  compile is compiled once.
  """
  from mlp import compile_cache

  session = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    session = session.parent  # shared by the workers
  directory = session / 'xdg_cache'
  directory.mkdir(exist_ok=True)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('XDG_CACHE_HOME', str(directory))
    yield compile_cache.enable(str(directory / 'mlp-jax'))


# A tiny sweep from the command line: two hidden sizes x two learning rates x
# two lambdas, two models a chunk (four chunks), 60 steps evaluated every 20,
# no plots (tests/test_plots.py draws them).
SWEEP = [
  '--mode=sweep',
  '--config=configs/sweep.py',
  '--config.num_iters=60',
  '--config.eval_every=20',
  '--config.batch_size=32',
  '--config.train_eval_size=500',
  '--config.sweep.hidden_size=(8, 16)',
  '--config.sweep.learning_rate=(0.1, 0.3)',
  '--config.sweep.l2_reg=(1e-4, 1e-2)',
  '--config.models_per_chunk=2',
  '--config.write_plots=False',
]


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
  """`main.py --config=configs/test.py` (60 steps, H 16), its workdir and output."""
  workdir = tmp_path_factory.mktemp('train')
  result = run_main('--config=configs/test.py', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  return workdir, result


@pytest.fixture(scope='session')
def sweep_workdir(tmp_path_factory):
  """`main.py SWEEP`: its workdir and output."""
  workdir = tmp_path_factory.mktemp('sweep')
  result = run_main(*SWEEP, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


# The benchmark from the command line at the smallest shapes: H 16, batch 32,
# 1 and 3 models, a 256^3 peak matmul, one timing of each length.
BENCHMARK = [
  '--mode=benchmark',
  '--config=configs/benchmark.py',
  '--config.benchmark.hidden_sizes=(16,)',
  '--config.benchmark.batch_sizes=(32,)',
  '--config.benchmark.num_models=(1, 3)',
  '--config.benchmark.steps=4',
  '--config.benchmark.repeats=1',
  '--config.benchmark.peak_matmul_size=256',
  '--config.benchmark.min_seconds=0.02',
]


@pytest.fixture(scope='session')
def benchmark_workdir(tmp_path_factory):
  """`main.py BENCHMARK --verbose`: its workdir and output."""
  workdir = tmp_path_factory.mktemp('benchmark')
  result = run_main(*BENCHMARK, '--verbose', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


@pytest.fixture(scope='session')
def mnist():
  """The vendored MNIST splits (host NumPy arrays)."""
  from mlp import data

  return data.load_dataset('mnist')


@pytest.fixture
def mnist_loaded_once(monkeypatch, mnist):
  """In-process runs of the modes get the session's MNIST instead of reading
  (and verifying) the files again; other data settings load as usual."""
  from mlp import data as data_lib

  load = data_lib.from_config

  def from_config(config):
    default = (config.dataset, config.data_source, config.data_dir, config.num_val)
    return mnist if default == ('mnist', 'idx', '', 5000) else load(config)

  monkeypatch.setattr(data_lib, 'from_config', from_config)


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


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
  """Every scalar of a TensorBoard run, read by TensorBoard's own accumulator.

  Orphaned data is not purged, so an event written twice, or a step that goes
  back, shows up as such.
  """
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  accumulator = EventAccumulator(
    str(directory), size_guidance={'scalars': 0}, purge_orphaned_data=False
  )
  accumulator.Reload()
  return {
    tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
    for tag in accumulator.Tags()['scalars']
  }


def expected_scalars(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
  """What `read_scalars` should find for evaluations `rows` (as in
  metrics.jsonl): each curve at its steps, as float32 like TensorBoard keeps it."""
  from mlp.tensorboard_events import SCALARS

  return {
    tag: [(row['step'], float(np.float32(row[tag]))) for row in rows] for tag in SCALARS
  }


def read_hparams(directory: Path):
  """TensorBoard's multiplexer over `directory`, and `{run: {tag:
  HParamsPluginData}}` as TensorBoard's HParams plugin sees it."""
  from tensorboard.backend.event_processing import event_multiplexer
  from tensorboard.plugins.hparams import metadata, plugin_data_pb2

  multiplexer = event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(directory))
  multiplexer.Reload()
  contents = multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME)
  return multiplexer, {
    run: {
      tag: plugin_data_pb2.HParamsPluginData.FromString(c) for tag, c in tags.items()
    }
    for run, tags in contents.items()
  }


def session_values(runs: dict, run: str) -> dict:
  """The hyperparameters a run's HParams session declares, as Python values."""
  from mlp import tensorboard_events

  start = runs[run][tensorboard_events.SESSION_START_TAG].session_start_info
  return {k: getattr(v, v.WhichOneof('kind')) for k, v in start.hparams.items()}
