"""Multi-process sweeps: 2 processes x 2 CPU devices over gloo on the loopback.

The coordinator is `[::1]:PORT` (a bracketed IPv6 address) where the machine
has IPv6, else `127.0.0.1:PORT`.
"""

import csv
import fcntl
import json
import os
import signal
import socket
from pathlib import Path

import pytest

from tests.conftest import SWEEP, error_lines, run_main, start_main

# With `pytest -n`, the tests that share the `sweep_workdir` fixture run in one
# worker, which computes it once.
pytestmark = pytest.mark.xdist_group('sweep_workdir')

TWO_DEVICES = {'JAX_NUM_CPU_DEVICES': '2'}
# The H 8 half of `SWEEP`: one shape group, one chunk of 4 models over the 4
# devices, so checkpoints at steps 20, 40, 60 and the chunk's end.
SWEEP_H8 = [
  '--config.sweep.hidden_size=(8,)'
  if arg.startswith('--config.sweep.hidden_size')
  else arg
  for arg in SWEEP
]


def _loopback() -> tuple[socket.AddressFamily, str, str]:
  try:
    with socket.socket(socket.AF_INET6) as s:
      s.bind(('::1', 0))
    return socket.AF_INET6, '::1', '[::1]'
  except OSError:
    return socket.AF_INET, '127.0.0.1', '127.0.0.1'


FAMILY, HOST, ADDRESS_HOST = _loopback()


def free_port() -> int:
  with socket.socket(FAMILY) as s:
    s.bind((HOST, 0))
    return s.getsockname()[1]


def flags(process_id: int, port: int, num_processes: int = 2, timeout: int = 60):
  return [
    f'--coordinator_address={ADDRESS_HOST}:{port}',
    f'--num_processes={num_processes}',
    f'--process_id={process_id}',
    f'--distributed_timeout={timeout}',
  ]


def start_two(workdir: Path, envs: tuple[dict, dict] = ({}, {})):
  port = free_port()
  return [
    start_main(
      *SWEEP_H8, f'--workdir={workdir}', *flags(i, port), env={**TWO_DEVICES, **env}
    )
    for i, env in enumerate(envs)
  ]


def run_two(workdir: Path) -> list[tuple[str, str]]:
  processes = start_two(workdir)
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (_, err) in zip(processes, outputs, strict=True):
    assert p.returncode == 0, err[-3000:]
  return outputs


def read(workdir: Path) -> list[dict]:
  with open(workdir / 'results.csv') as f:
    return list(csv.DictReader(f))


def assert_same_results(a: list[dict], b: list[dict]) -> None:
  """`a`, of the H 8 half of `SWEEP`, equals those models in `b`, all of it."""
  b = [row for row in b if row['hidden_size'] == '8']
  assert len(a) == len(b) == 4
  for x, y in zip(a, b, strict=True):
    assert {k: x[k] for k in x if k != 'final_loss'} == {
      k: y[k] for k in y if k != 'final_loss'
    }
    assert float(x['final_loss']) == pytest.approx(float(y['final_loss']), rel=1e-5)


def test_a_dead_peer_stops_the_run_which_resumes_equal_to_one(sweep_workdir, tmp_path):
  """Process 0 holds the workdir's lock (seen while it is stopped after its 3rd
  checkpoint). Process 1 dies after its own 3rd; process 0, let go on, stops at
  its next collective with one line, not a traceback or an abort, and the two
  resume."""
  single, _ = sweep_workdir
  survivor, dead = start_two(
    tmp_path,
    envs=({'MLP_STOP_AFTER_CHECKPOINT': '3'}, {'MLP_KILL_AFTER_CHECKPOINT': '3'}),
  )
  _, status = os.waitpid(survivor.pid, os.WUNTRACED)
  assert os.WIFSTOPPED(status)
  with open(tmp_path / '.lock') as lock:  # process 0 holds the workdir
    with pytest.raises(BlockingIOError):
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert json.loads(lock.read())['pid'] == survivor.pid
  dead.communicate(timeout=300)
  assert dead.returncode == -signal.SIGKILL
  os.kill(survivor.pid, signal.SIGCONT)
  _, stderr = survivor.communicate(timeout=300)
  assert survivor.returncode == 1 and 'Traceback' not in stderr
  (error,) = error_lines(stderr)
  assert error.startswith('Error: process 0 lost contact with the other processes')
  assert 'run the same command on every process to resume' in error
  assert not (tmp_path / 'results.csv').exists()
  outputs = run_two(tmp_path)
  assert 'Resuming from' in outputs[0][1]
  assert_same_results(read(tmp_path), read(single))
  assert '"num_devices": 4' in (tmp_path / 'summary.json').read_text()
  assert '| hidden_size |' in outputs[0][0] and '| hidden_size |' in outputs[1][0]


def test_a_missing_process_is_a_clear_error_not_a_hang(tmp_path):
  result = run_main(*SWEEP, f'--workdir={tmp_path}', *flags(0, free_port(), timeout=2))
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  (error,) = error_lines(result.stderr)
  assert 'other processes arrived' in error and '--distributed_timeout' in error


def test_a_missing_coordinator_is_a_clear_error(tmp_path):
  result = run_main(*SWEEP, f'--workdir={tmp_path}', *flags(1, free_port(), timeout=1))
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert 'could not reach the coordinator' in error_lines(result.stderr)[0]


def test_incomplete_distributed_flags_are_refused(tmp_path):
  result = run_main(*SWEEP, f'--workdir={tmp_path}', '--num_processes=2')
  assert result.returncode == 1 and 'needs --coordinator_address' in result.stderr


def test_train_mode_refuses_several_processes(tmp_path, monkeypatch):
  import jax

  from configs import test as test_config
  from mlp.errors import UserError
  from mlp.modes import train

  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  with pytest.raises(UserError, match='a multi-process run is for --mode=sweep'):
    train.run(test_config.get_config(), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()
