"""Multi-process runs: 2 processes x 2 CPU devices over gloo on the loopback.

The coordinator is `[::1]:PORT` (a bracketed IPv6 address) where the machine
has IPv6, else `127.0.0.1:PORT`. Searches on two processes, and a peer that
dies in one, are tested in tests/test_search.py; here, what refuses to start.
"""

import socket

import pytest

from tests.conftest import SWEEP, error_lines, run_main

TWO_DEVICES = {'JAX_NUM_CPU_DEVICES': '2'}


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
