"""Nothing lost: kill and resume, refusals, determinism, divergence, provenance."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from configs import test as test_config
from mlp import run
from mlp.errors import UserError

REPO = Path(__file__).resolve().parent.parent
TRAIN = [
  '--config=configs/default.py',
  '--config.eval_every=100',
  '--config.num_iters=1500',
]
SWEEP = [
  '--mode=sweep',
  '--config=configs/sweep.py',
  '--config.num_iters=600',
  '--config.eval_every=50',
  '--config.batch_size=64',
  '--config.sweep.hidden_size=(16, 32)',
  '--config.sweep.learning_rate=(0.1, 0.3)',
  '--config.sweep.l2_reg=(1e-4, 1e-3)',
  '--config.models_per_chunk=2',
]


def main_py(args, workdir, **kwargs):
  return subprocess.Popen(
    [sys.executable, 'main.py', *args, f'--workdir={workdir}'],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    **kwargs,
  )


def run_to_end(args, workdir) -> str:
  process = main_py(args, workdir)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  return stderr


def kill_after_checkpoints(args, workdir: Path, count: int) -> None:
  """Starts a run and SIGKILLs it once `count` checkpoints have been written."""
  process = main_py(args, workdir)
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline and process.poll() is None:
    checkpoints = workdir / 'checkpoints'
    if checkpoints.is_dir() and len(list(checkpoints.glob('ckpt_*.npz'))) >= count:
      break
    time.sleep(0.01)
  assert process.poll() is None, 'the run ended before it could be killed'
  os.kill(process.pid, signal.SIGKILL)
  process.wait()


def metrics_without_time(workdir: Path) -> list[dict]:
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [{k: v for k, v in json.loads(x).items() if k != 'elapsed_s'} for x in lines]


def test_train_killed_and_resumed_equals_uninterrupted(tmp_path):
  run_to_end(TRAIN, tmp_path / 'whole')
  kill_after_checkpoints(TRAIN, tmp_path / 'killed', count=3)
  assert not (tmp_path / 'killed' / 'summary.json').exists()
  stderr = run_to_end(TRAIN, tmp_path / 'killed')
  assert 'Resuming from' in stderr
  whole = np.load(tmp_path / 'whole' / 'params.npz')
  resumed = np.load(tmp_path / 'killed' / 'params.npz')
  for name in ('W1', 'b1', 'W2', 'b2'):
    np.testing.assert_array_equal(resumed[name], whole[name])
  assert metrics_without_time(tmp_path / 'killed') == metrics_without_time(
    tmp_path / 'whole'
  )
  assert len(list((tmp_path / 'killed' / 'checkpoints').glob('ckpt_*.npz'))) == 3


def test_sweep_killed_and_resumed_equals_uninterrupted(tmp_path):
  run_to_end(SWEEP, tmp_path / 'whole')
  kill_after_checkpoints(SWEEP, tmp_path / 'killed', count=3)
  stderr = run_to_end(SWEEP, tmp_path / 'killed')
  assert 'Resuming from' in stderr
  for name in ('results.csv', 'curves.jsonl'):
    assert (tmp_path / 'killed' / name).read_text() == (
      tmp_path / 'whole' / name
    ).read_text()
  whole = np.load(tmp_path / 'whole' / 'best_params.npz')
  resumed = np.load(tmp_path / 'killed' / 'best_params.npz')
  for name in ('W1', 'b1', 'W2', 'b2'):
    np.testing.assert_array_equal(resumed[name], whole[name])


def test_another_config_is_refused_and_restart_starts_over(tmp_path):
  config = test_config.get_config()
  run.train_and_evaluate(config, str(tmp_path))
  before = (tmp_path / 'params.npz').read_bytes()
  changed = test_config.get_config()
  changed.learning_rate = 0.2
  with pytest.raises(UserError, match=r'learning_rate: 0\.3 -> 0\.2.*--restart'):
    run.train_and_evaluate(changed, str(tmp_path))
  assert (tmp_path / 'params.npz').read_bytes() == before  # nothing overwritten
  summary = run.train_and_evaluate(changed, str(tmp_path), restart=True)
  assert summary['resumed_from_step'] is None
  assert json.loads((tmp_path / 'config.json').read_text())['learning_rate'] == 0.2


def test_same_config_and_seed_are_bitwise_deterministic(tmp_path):
  for name in ('a', 'b'):
    run.train_and_evaluate(test_config.get_config(), str(tmp_path / name))
  a, b = np.load(tmp_path / 'a' / 'params.npz'), np.load(tmp_path / 'b' / 'params.npz')
  for name in ('W1', 'b1', 'W2', 'b2'):
    np.testing.assert_array_equal(a[name], b[name])
  assert metrics_without_time(tmp_path / 'a') == metrics_without_time(tmp_path / 'b')


def test_divergence_stops_early_with_a_clear_error(tmp_path):
  process = main_py(
    [
      '--config=configs/test.py',
      '--config.learning_rate=1e6',
      '--config.init_std=10.0',
    ],
    tmp_path,
  )
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 1 and 'Traceback' not in stderr
  assert 'Error: training diverged' in stderr and 'learning_rate' in stderr
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['diverged'] is True and summary['steps'] < 60


def test_summary_records_versions_device_and_commit(tmp_path):
  summary = run.train_and_evaluate(test_config.get_config(), str(tmp_path))
  assert summary['versions']['jax'] and summary['versions']['python']
  assert summary['backend'] == 'cpu' and summary['device_kind']
  assert 'git_commit' in summary  # None outside a git checkout
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['versions'] == summary['versions']


def test_write_plots_false_skips_the_pictures(tmp_path):
  config = test_config.get_config()
  config.write_plots = False
  run.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'plots').exists() and (tmp_path / 'report.md').is_file()
