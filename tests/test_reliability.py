"""Nothing lost when runs collide, files are damaged, the disk fills or a
signal arrives: real processes on real files.

Runs stop at known points, never at a time: `MLP_KILL_AFTER_CHECKPOINT=N`
kills `main.py` right after its N-th checkpoint, and `MLP_STOP_AFTER_CHECKPOINT=N`
stops it there (SIGSTOP) with its workdir claimed; `os.waitpid(pid,
WUNTRACED)` returns once it has stopped, and SIGCONT lets it go on.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mlp import checkpoint, distributed, loop
from mlp import workdir as workdir_lib
from mlp.errors import UserError
from tests.conftest import REPO, error_lines, run_main, start_main

# The runs here are compared with the `trained_workdir` run (configs/test.py:
# checkpoints at steps 20, 40 and 60), which is computed once per worker.
pytestmark = pytest.mark.xdist_group('trained_workdir')

TEST = ['--config=configs/test.py', '--config.write_plots=False']


def assert_same_params(a: Path, b: Path) -> None:
  with np.load(a / 'params.npz') as x, np.load(b / 'params.npz') as y:
    assert sorted(x.files) == sorted(y.files)
    for name in x.files:
      np.testing.assert_array_equal(x[name], y[name])


def steps(workdir: Path) -> list[int]:
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line)['step'] for line in lines]


def start_stopped(*args: str, after: int = 1) -> subprocess.Popen:
  """`main.py ARGS`, stopped right after its `after`-th checkpoint."""
  process = start_main(*args, env={'MLP_STOP_AFTER_CHECKPOINT': str(after)})
  _, status = os.waitpid(process.pid, os.WUNTRACED)
  assert os.WIFSTOPPED(status), status
  return process


def snapshot(workdir: Path) -> dict[str, bytes]:
  return {
    str(p.relative_to(workdir)): p.read_bytes()
    for p in workdir.rglob('*')
    if p.is_file()
  }


# -- A hostile session on one workdir -----------------------------------------


def test_lock_signals_damage_and_a_full_disk_lose_nothing(trained_workdir, tmp_path):
  """One workdir through every kind of trouble, in the order a bad day brings
  it; it ends bitwise equal to the uninterrupted run. (One scenario rather
  than a test each: every step here is a process of its own.)"""
  disk = tmp_path / 'disk'
  real_disk = _small_disk(disk)  # a 4 MB tmpfs where mounting is allowed
  workdir = disk / 'w'
  args = (*TEST, f'--workdir={workdir}')
  try:
    # 1. A run holds the workdir: a second run, or --restart, changes nothing.
    first = start_stopped(*args)  # stopped after its checkpoint at step 20
    before = snapshot(workdir)
    second = run_main(*args, '--restart', '--config.learning_rate=0.1')
    assert second.returncode == 1 and 'Traceback' not in second.stderr
    (error,) = error_lines(second.stderr)
    assert error.startswith(
      f'Error: workdir {workdir} is in use by process {first.pid} on '
      f'{socket.gethostname()} since '
    )
    assert snapshot(workdir) == before

    # 2. Ctrl-C during a segment takes effect at its end, after a checkpoint.
    os.kill(first.pid, signal.SIGINT)
    os.kill(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 130 and 'Traceback' not in stderr
    assert error_lines(stderr) == [
      f'Error: Interrupted at step 40; the newest checkpoint, {workdir}/checkpoints/'
      'ckpt_000000002.npz (step 40), is intact: the same command resumes'
    ]
    assert steps(workdir) == [20, 40]

    # 3. The newest checkpoint is damaged, config.json deleted, and a kill left
    #    temporary files: another config is still refused, by the config the
    #    checkpoints hold, and the damaged one is set aside with a warning.
    at_20, at_40 = checkpoint.all_checkpoints(workdir / 'checkpoints')
    _flip_a_byte(at_40)
    (workdir / 'config.json').unlink()
    leftovers = [workdir / '.params.npz.x1.tmp', workdir / 'checkpoints/.ckpt.x2.tmp']
    for leftover in leftovers:
      leftover.write_bytes(b'partial')
    other = run_main(*args, '--config.learning_rate=0.1')
    assert other.returncode == 1
    assert f'Checkpoint {at_40} is damaged' in other.stderr
    (error,) = error_lines(other.stderr)
    assert 'holds a run with another config (learning_rate: 0.3 -> 0.1' in error
    assert f'from its checkpoint {at_20.name}' in error

    # 4. The disk fills: the run resumes from step 20, cannot write its next
    #    checkpoint, and says so; the newest checkpoint stays intact.
    if real_disk:  # room for a metrics line, not for a checkpoint
      stat = os.statvfs(disk)
      (disk / 'filler').write_bytes(b'\0' * (stat.f_bavail * stat.f_frsize - 16384))
      env = {}
    else:
      env = {'MLP_FAIL_WRITE': 'ckpt_*.npz'}
    full = run_main(*args, env=env)
    assert f'Resuming from {at_20} at step 20' in full.stderr
    assert full.returncode == 1 and 'Traceback' not in full.stderr
    (error,) = error_lines(full.stderr)
    assert error == (
      f'Error: cannot write {workdir}/checkpoints/ckpt_000000003.npz: No space left '
      f'on device; free some space; the newest checkpoint, {at_20} (step 20), is '
      'intact: the same command resumes'
    )
    assert checkpoint.all_checkpoints(workdir / 'checkpoints') == [at_20]
    checkpoint.read(at_20)  # intact
    assert not any(p.exists() for p in leftovers) and not list(workdir.rglob('.*.tmp'))
    (disk / 'filler').unlink(missing_ok=True)

    # 5. SIGTERM (a scheduler's preemption) in the last segment.
    process = start_stopped(*args)  # after its checkpoint at step 40
    os.kill(process.pid, signal.SIGTERM)
    os.kill(process.pid, signal.SIGCONT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143
    assert error_lines(stderr) == [
      f'Error: Interrupted at step 60; the newest checkpoint, {workdir}/checkpoints/'
      'ckpt_000000004.npz (step 60), is intact: the same command resumes'
    ]

    # 6. The same command finishes the run: bitwise the uninterrupted one.
    resumed = run_main(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert 'at step 60' in resumed.stderr
    assert steps(workdir) == [20, 40, 60]
    assert_same_params(workdir, trained_workdir[0])
  finally:
    if real_disk:
      subprocess.run(['umount', str(disk)], check=True)


def test_two_runs_started_together_leave_one_consistent_run(tmp_path):
  rates = (0.3, 0.1)
  processes = [
    start_main(*TEST, f'--workdir={tmp_path}', f'--config.learning_rate={lr}')
    for lr in rates
  ]
  outputs = [p.communicate(timeout=300) for p in processes]
  codes = [p.returncode for p in processes]
  assert sorted(codes) == [0, 1], outputs
  winner = rates[codes.index(0)]
  (error,) = error_lines(outputs[codes.index(1)][1])
  # Refused while the winner held the workdir, or after it, for its config.
  assert 'is in use by process' in error or 'holds a run with another config' in error
  assert json.loads((tmp_path / 'config.json').read_text())['learning_rate'] == winner
  assert steps(tmp_path) == [20, 40, 60]
  summary = json.loads((tmp_path / 'summary.json').read_text())
  last = json.loads((tmp_path / 'metrics.jsonl').read_text().splitlines()[-1])
  assert summary['final_loss'] == last['train_loss']
  newest = checkpoint.read(checkpoint.all_checkpoints(tmp_path / 'checkpoints')[-1])
  assert newest.metadata['config']['learning_rate'] == winner


# -- Damaged files -----------------------------------------------------------


def _saved(tmp_path: Path, count: int = 3) -> list[Path]:
  directory = tmp_path / 'checkpoints'
  for i in range(count):
    state = {'w': np.full((4, 3), i, np.float32), 'step': np.int32(i)}
    checkpoint.save(directory, state, {'config': {}, 'finished': {}, 'job': None})
  return checkpoint.all_checkpoints(directory)


def _cut_short(path: Path) -> None:
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))


def _random_bytes(path: Path) -> None:
  path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


@pytest.mark.parametrize('damage', [_cut_short, _flip_a_byte, _random_bytes])
def test_a_damaged_newest_checkpoint_is_set_aside(tmp_path, damage, caplog):
  first, second, newest = _saved(tmp_path)
  damage(newest)
  with pytest.raises(checkpoint.Damaged):
    checkpoint.read(newest)
  path, contents = checkpoint.newest_intact(tmp_path / 'checkpoints')
  assert path == second and contents.state["['w']"][0, 0] == 1
  assert f'Checkpoint {newest} is damaged' in caplog.text
  assert newest.with_name(newest.name + '.damaged').exists() and not newest.exists()


def test_no_intact_checkpoint_is_one_error(tmp_path):
  for path in _saved(tmp_path):
    _flip_a_byte(path)
  with pytest.raises(UserError, match='no intact checkpoint .* pass --restart'):
    checkpoint.newest_intact(tmp_path / 'checkpoints')


def test_damaged_params_and_config_are_one_error(trained_workdir, tmp_path):
  from mlp.modes import eval as eval_mode
  from mlp.modes import predict

  workdir = tmp_path / 'w'
  shutil.copytree(trained_workdir[0], workdir, ignore=shutil.ignore_patterns('*.lock'))
  _cut_short(workdir / 'params.npz')
  with pytest.raises(
    UserError, match=r'cannot read saved params .*params.npz \(damaged'
  ):
    eval_mode.run(None, str(workdir))
  with pytest.raises(UserError, match='damaged'):
    predict.run(str(workdir), str(REPO / 'docs/gallery/train_weights.png'), False)
  shutil.copy(trained_workdir[0] / 'params.npz', workdir / 'params.npz')
  for text, problem in (('{"hidden_size": 1', 'Expecting'), ('[1, 2]', 'a JSON list')):
    (workdir / 'config.json').write_text(text)
    with pytest.raises(UserError, match=f'config.json .damaged: {problem}.*--config'):
      eval_mode.run(None, str(workdir))


# -- Helpers ---


def _small_disk(path: Path) -> bool:
  """Mounts a 4 MB tmpfs at `path` where this process may; else False."""
  path.mkdir()
  if os.geteuid() != 0 or shutil.which('mount') is None:
    return False
  mounted = subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(path)], capture_output=True
  )
  return mounted.returncode == 0


# -- Divergence, addresses -------------------------------------------------------


def test_divergence_includes_a_finite_explosion():
  start = np.asarray([2.3, 2.3, 2.3])
  losses = np.asarray([[2.0, 1.5], [2.0, 1e18], [np.nan, 1.0]])
  np.testing.assert_array_equal(loop.diverged(losses, start), [False, True, True])
  bound = loop.DIVERGENCE_FACTOR * 2.3
  assert not loop.diverged([bound * 0.99], 2.3) and loop.diverged([bound * 1.01], 2.3)


@pytest.mark.parametrize(
  'address, expected',
  [
    ('127.0.0.1:70000', 'port from 1 to 65535'),
    ('localhost', 'must look like HOST:PORT'),
    ('no-such-host.invalid:1234', 'host no-such-host.invalid is unknown'),
  ],
)
def test_bad_coordinator_addresses_are_one_error(address, expected):
  with pytest.raises(UserError, match=expected):
    distributed.parse_address(address)


def test_bracketed_ipv6_and_a_port_in_use():
  assert distributed.parse_address('[::1]:1234')[:2] == ('::1', 1234)
  with socket.create_server(('127.0.0.1', 0)) as busy:
    port = busy.getsockname()[1]
    with pytest.raises(UserError, match='cannot listen on 127.0.0.1:.* in use'):
      distributed._rendezvous(f'127.0.0.1:{port}', 2, 0, 5)


def test_claim_is_released_when_the_run_ends(tmp_path):
  with workdir_lib.claim(tmp_path):
    info = json.loads((tmp_path / '.lock').read_text())
    assert info['pid'] == os.getpid()
  with workdir_lib.claim(tmp_path):  # free again
    pass


def test_other_damaged_workdir_files_are_one_error_or_skipped(tmp_path):
  (tmp_path / '.lock').mkdir()  # not a file
  with (
    pytest.raises(UserError, match='cannot lock workdir'),
    workdir_lib.claim(tmp_path),
  ):
    pass
  metrics = tmp_path / 'metrics.jsonl'
  metrics.write_bytes(b'{"step": 20}\n\xff\xfe garbage\n[1]\n{"step": 40}\n{"step": 6')
  checkpoint.truncate_jsonl(metrics, 40)
  assert metrics.read_text() == '{"step": 20}\n{"step": 40}\n'
  (tmp_path / 'checkpoints').write_text('a file where the folder should be')
  with pytest.raises(workdir_lib.WriteError, match='cannot write .*checkpoints'):
    checkpoint.save(tmp_path / 'checkpoints', {}, {})
