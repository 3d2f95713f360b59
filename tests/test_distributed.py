"""Multi-process sweeps: 2 processes x 2 CPU devices over gloo on 127.0.0.1."""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SWEEP = [
  '--mode=sweep',
  '--config=configs/sweep.py',
  '--config.num_iters=300',
  '--config.eval_every=50',
  '--config.batch_size=64',
  '--config.sweep.hidden_size=(16, 32)',
  '--config.sweep.learning_rate=(0.1, 0.3, 0.5)',
  '--config.sweep.l2_reg=(1e-4, 1e-3)',
]
ENV = {**os.environ, 'JAX_NUM_CPU_DEVICES': '2', 'JAX_PLATFORMS': 'cpu'}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start(args, workdir, process_id=None, port=None, num_processes=2, timeout=60):
  extra = []
  if process_id is not None:
    extra = [
      f'--coordinator_address=127.0.0.1:{port}',
      f'--num_processes={num_processes}',
      f'--process_id={process_id}',
      f'--distributed_timeout={timeout}',
    ]
  return subprocess.Popen(
    [sys.executable, 'main.py', *args, f'--workdir={workdir}', *extra],
    cwd=REPO,
    env=ENV,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def run_two(args, workdir):
  port = free_port()
  processes = [start(args, workdir, i, port) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (_, err) in zip(processes, outputs, strict=True):
    assert p.returncode == 0, err[-3000:]
  return outputs


def read(workdir: Path) -> list[dict]:
  with open(workdir / 'results.csv') as f:
    return list(csv.DictReader(f))


def assert_same_results(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b) == 12
  for x, y in zip(a, b, strict=True):
    assert {k: x[k] for k in x if k != 'final_loss'} == {
      k: y[k] for k in y if k != 'final_loss'
    }
    assert float(x['final_loss']) == pytest.approx(float(y['final_loss']), rel=1e-5)


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('single')
  process = start(SWEEP, workdir)
  _, err = process.communicate(timeout=300)
  assert process.returncode == 0, err[-3000:]
  return read(workdir)


def test_two_processes_equal_one(single, tmp_path):
  outputs = run_two(SWEEP, tmp_path)
  assert_same_results(read(tmp_path), single)
  assert '"num_devices": 4' in (tmp_path / 'summary.json').read_text()
  assert '| hidden_size |' in outputs[0][0] and '| hidden_size |' in outputs[1][0]


def test_two_processes_killed_and_resumed(single, tmp_path):
  port = free_port()
  processes = [start(SWEEP, tmp_path, i, port) for i in range(2)]
  deadline = time.monotonic() + 120
  checkpoints = tmp_path / 'checkpoints'
  while time.monotonic() < deadline and all(p.poll() is None for p in processes):
    if checkpoints.is_dir() and len(list(checkpoints.glob('ckpt_*.npz'))) >= 3:
      break
    time.sleep(0.01)
  assert all(p.poll() is None for p in processes), 'the sweep ended before the kill'
  for p in processes:
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
  assert not (tmp_path / 'results.csv').exists()
  outputs = run_two(SWEEP, tmp_path)
  assert 'Resuming from' in outputs[0][1]
  assert_same_results(read(tmp_path), single)


def test_a_missing_process_is_a_clear_error_not_a_hang(tmp_path):
  started = time.monotonic()
  process = start(SWEEP, tmp_path, process_id=0, port=free_port(), timeout=5)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 1 and 'Traceback' not in err
  assert 'other processes arrived' in err and '--distributed_timeout' in err
  assert time.monotonic() - started < 60


def test_a_missing_coordinator_is_a_clear_error(tmp_path):
  process = start(SWEEP, tmp_path, process_id=1, port=free_port(), timeout=3)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 1 and 'Traceback' not in err
  assert 'could not reach the coordinator' in err


def test_incomplete_distributed_flags_are_refused(tmp_path):
  process = subprocess.run(
    [sys.executable, 'main.py', *SWEEP, f'--workdir={tmp_path}', '--num_processes=2'],
    cwd=REPO,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert process.returncode == 1 and 'needs --coordinator_address' in process.stderr
