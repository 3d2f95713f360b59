"""--mode=train and --mode=eval end to end on configs/test.py (real MNIST).

Kill-and-resume runs stop at a known point: `MLP_KILL_AFTER_CHECKPOINT=N`
makes `main.py` SIGKILL itself right after writing its N-th checkpoint.
"""

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from configs import test as test_config
from mlp import loop
from mlp.errors import UserError
from mlp.modes import eval as eval_mode
from mlp.modes import train
from tests.conftest import (
  CompileCounter,
  error_lines,
  expected_scalars,
  read_scalars,
  run_main,
)

# With `pytest -n`, the tests that share the `trained_workdir` fixture run in one
# worker, which computes it once.
pytestmark = pytest.mark.xdist_group('trained_workdir')

TEST = ['--config=configs/test.py']  # 60 steps, an evaluation every 20
NO_PLOTS = '--config.write_plots=False'


@pytest.fixture
def trained(trained_workdir):
  return trained_workdir


def metrics_without_time(workdir: Path) -> list[dict]:
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [{k: v for k, v in json.loads(x).items() if k != 'elapsed_s'} for x in lines]


def test_train_writes_the_workdir_files(trained):
  workdir, result = trained
  assert sorted(p.name for p in workdir.iterdir()) == [
    '.lock',
    '.manifest',
    'checkpoints',
    'config.json',
    'metrics.jsonl',
    'params.npz',
    'plots',
    'report.md',
    'summary.json',
    'tensorboard',
  ]
  summary = json.loads((workdir / 'summary.json').read_text())
  contract = {
    'val_accuracy',
    'test_accuracy',
    'train_accuracy',
    'steps',
    'train_seconds',
    'compile_seconds',
    'examples_per_second',
    'backend',
    'jax_version',
  }
  assert contract <= set(summary)
  assert summary['steps'] == 60 and summary['backend'] == 'cpu'
  assert summary['val_accuracy'] > 0.6  # 60 steps of a 16-unit net reach about 0.74
  assert summary['versions']['jax'] and summary['device_kind']
  metrics = [
    json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]
  assert [m['step'] for m in metrics] == [20, 40, 60]
  fields = {'step', 'epoch', 'learning_rate', 'train_loss', 'train_accuracy'}
  assert all(fields | {'val_accuracy', 'elapsed_s'} <= set(m) for m in metrics)
  assert metrics[-1]['val_accuracy'] == summary['val_accuracy']
  assert json.loads((workdir / 'config.json').read_text())['hidden_size'] == 16
  assert f'test_accuracy {summary["test_accuracy"]:.4f}' in result.stdout
  assert f'Report: {workdir}/report.md and plots in {workdir}/plots/' in result.stdout
  assert 'examples/s' in result.stderr and 'left' in result.stderr  # progress lines
  # The progress lines' train accuracy is on configs/test.py's 500 images,
  # the final one on all of them.
  assert 'train acc (500 subset) ' in result.stderr
  assert f'(train accuracy on all 55k {summary["train_accuracy"]:.4f})' in result.stderr
  assert 'Done in' in result.stderr and 'resumes included' not in result.stderr
  # Log lines a person reads: the time, then the message.
  assert re.search(r'^\d\d:\d\d:\d\d Loaded mnist \(idx\)', result.stderr, re.M)
  assert not re.search(r'^I\d{4} ', result.stderr, re.M)
  assert 'train accuracy (all 55,000 images)' in (workdir / 'report.md').read_text()


def test_killed_and_resumed_equals_uninterrupted(trained, tmp_path):
  whole, _ = trained
  killed = run_main(
    *TEST, NO_PLOTS, f'--workdir={tmp_path}', env={'MLP_KILL_AFTER_CHECKPOINT': '2'}
  )
  assert killed.returncode == -signal.SIGKILL
  assert not (tmp_path / 'summary.json').exists()
  assert [m['step'] for m in metrics_without_time(tmp_path)] == [20, 40]
  resumed = run_main(
    *TEST, NO_PLOTS, f'--workdir={tmp_path}', env={'JAX_LOG_COMPILES': '1'}
  )
  assert resumed.returncode == 0, resumed.stderr
  assert 'Resuming from' in resumed.stderr and 'at step 40' in resumed.stderr
  # The second process loads its programs from the compilation cache.
  assert "cache hit for 'jit_train_segment'" in resumed.stderr
  for name, value in np.load(whole / 'params.npz').items():
    np.testing.assert_array_equal(np.load(tmp_path / 'params.npz')[name], value)
  assert metrics_without_time(tmp_path) == metrics_without_time(whole)
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['resumed_from_step'] == 40
  # This process's times add up; the run's training time is labelled beside.
  assert 0 < summary['process_train_seconds'] < summary['train_seconds']
  assert (
    'training over all processes of this run, resumes included, '
    f'{summary["train_seconds"]:.2f}s' in resumed.stderr
  )
  assert len(list((tmp_path / 'checkpoints').glob('ckpt_*.npz'))) == 3
  # TensorBoard: each process wrote its own event file, and together they
  # hold every evaluation once, in order.
  assert len(list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))) == 2
  rows = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert read_scalars(tmp_path / 'tensorboard') == expected_scalars(rows)


# The eval of a train workdir from the command line: tests/test_readme.py runs
# the README's `--mode=eval --workdir=runs/default` on `trained_workdir`.


def test_another_config_is_refused_and_restart_starts_over(tmp_path, mnist_loaded_once):
  config = test_config.get_config()
  config.num_iters = 20
  train.run(config, str(tmp_path))
  before = (tmp_path / 'params.npz').read_bytes()
  changed = test_config.get_config()
  changed.num_iters, changed.learning_rate = 20, 0.2
  with pytest.raises(UserError, match=r'learning_rate: 0\.3 -> 0\.2.*--restart'):
    train.run(changed, str(tmp_path))
  assert (tmp_path / 'params.npz').read_bytes() == before  # nothing overwritten
  summary = train.run(changed, str(tmp_path), restart=True)
  assert summary['resumed_from_step'] is None
  assert json.loads((tmp_path / 'config.json').read_text())['learning_rate'] == 0.2


def test_same_config_and_seed_are_bitwise_deterministic(tmp_path, mnist_loaded_once):
  config = test_config.get_config()
  config.num_iters, config.write_plots = 20, False
  for name in ('a', 'b'):
    train.run(config, str(tmp_path / name))
  a, b = np.load(tmp_path / 'a' / 'params.npz'), np.load(tmp_path / 'b' / 'params.npz')
  for name in ('W1', 'b1', 'W2', 'b2'):
    np.testing.assert_array_equal(a[name], b[name])
  assert metrics_without_time(tmp_path / 'a') == metrics_without_time(tmp_path / 'b')
  assert not (tmp_path / 'a' / 'plots').exists()  # write_plots=False
  assert (tmp_path / 'a' / 'report.md').is_file()


def test_nothing_compiles_after_training(tmp_path, mnist_loaded_once, monkeypatch):
  """The final evaluations (train, val, test in one program), the plots and the
  report use only what was compiled before training."""
  counter = CompileCounter()
  train_jobs = loop.Trainer.train

  def train_then_count(self, *args, **kwargs):
    outcome = train_jobs(self, *args, **kwargs)
    counter.__enter__()
    return outcome

  monkeypatch.setattr(loop.Trainer, 'train', train_then_count)
  config = test_config.get_config()
  config.num_iters = 20
  try:
    summary = train.run(config, str(tmp_path))
  finally:
    counter.__exit__()
  assert counter.events == []
  assert len(list((tmp_path / 'plots').glob('*.png'))) == 4
  last = json.loads((tmp_path / 'metrics.jsonl').read_text().splitlines()[-1])
  assert summary['val_accuracy'] == last['val_accuracy']  # the same params, exactly


def test_divergence_stops_early_with_a_clear_error(tmp_path):
  result = run_main(
    *TEST,
    f'--workdir={tmp_path}',
    '--config.learning_rate=1e6',
    '--config.init_std=10.0',
    NO_PLOTS,
  )
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  (error,) = error_lines(result.stderr)
  assert error.startswith('Error: training diverged') and 'learning_rate' in error
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['diverged'] is True and summary['steps'] < 60


@pytest.mark.parametrize(
  'field, value, expected',
  [
    ('hidden_size', 0, 'hidden_size=0'),
    ('batch_size', 60000, 'at most the 55000 training images'),
    ('dataset', 'cifar', 'cifar'),
    ('data_dir', '/nonexistent/mnist', '/nonexistent/mnist'),
    ('num_val', 60000, 'num_val'),
    ('data_url', 'ftp://example.invalid/', 'ftp://'),
    ('hidden_size', 10_000_000, r'needs about .* GB .* free: lower hidden_size'),
  ],
)
def test_user_errors_leave_nothing_behind(tmp_path, field, value, expected):
  config = test_config.get_config()
  config[field] = value
  if field == 'data_url':  # used only for files absent from data_dir
    config.data_dir = str(tmp_path)
  with pytest.raises(UserError, match=expected):
    train.run(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_a_user_error_is_one_line_without_traceback(tmp_path):
  for args, expected in (
    (['--config.hidden_size=0'], 'Error: config field hidden_size=0 is invalid'),
    (['extra_argument'], 'Error: unexpected arguments: extra_argument'),
  ):
    result = run_main(*TEST, f'--workdir={tmp_path / "w"}', *args)
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    (error,) = error_lines(result.stderr)
    assert error.startswith(expected)


def test_workdir_that_is_or_is_below_a_file_is_refused(tmp_path):
  target = tmp_path / 'file'
  target.write_text('keep me')
  for workdir, expected in ((target, 'is a file'), (target / 'sub', 'cannot create')):
    with pytest.raises(UserError, match=expected):
      train.run(test_config.get_config(), str(workdir))
  assert target.read_text() == 'keep me'


def test_corrupt_data_file_is_named(tmp_path):
  from tests.conftest import REPO

  data_dir = tmp_path / 'mnist'
  data_dir.mkdir()
  for source in (REPO / 'data' / 'mnist').glob('*.gz'):
    (data_dir / source.name).write_bytes(source.read_bytes())
  labels = data_dir / 't10k-labels-idx1-ubyte.gz'
  labels.write_bytes(labels.read_bytes()[:100])
  config = test_config.get_config()
  config.data_dir = str(data_dir)
  with pytest.raises(UserError, match='t10k-labels-idx1-ubyte.gz'):
    train.run(config, str(tmp_path / 'w'))


def test_eval_refuses_what_it_cannot_evaluate(tmp_path, trained):
  workdir, _ = trained
  with pytest.raises(UserError, match='does not exist'):
    eval_mode.run(None, str(tmp_path / 'missing'))
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(UserError, match='is a file, not a directory'):
    eval_mode.run(None, str(tmp_path / 'a_file'))
  with pytest.raises(UserError, match='no saved params'):
    eval_mode.run(None, str(tmp_path))
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'config.json').write_text((workdir / 'config.json').read_text())
  np.savez(
    other / 'params.npz', W1=np.zeros((100, 8)), b1=np.zeros(8), W2=np.zeros((8, 10))
  )
  with pytest.raises(UserError, match='do not fit'):
    eval_mode.run(None, str(other))
  (other / 'params.npz').write_bytes(b'not a zip file')
  with pytest.raises(UserError, match='params.npz'):
    eval_mode.run(None, str(other))


def test_an_unusable_compilation_cache_is_a_warning(trained, tmp_path):
  workdir, _ = trained
  (tmp_path / 'file').write_text('')
  result = run_main(
    '--mode=eval',
    f'--workdir={workdir}',
    f'--compilation_cache_dir={tmp_path / "file" / "cache"}',
  )
  assert result.returncode == 0, result.stderr
  assert 'Not caching compiled programs' in result.stderr
  assert 'test_accuracy' in result.stdout
