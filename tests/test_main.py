"""The command line end to end on configs/test.py: files, eval, and user errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_main(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})}
  return subprocess.run(
    [sys.executable, 'main.py', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('train')
  result = run_main('--config=configs/test.py', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  return workdir, result


def test_train_writes_the_workdir_files(trained):
  workdir, result = trained
  assert sorted(p.name for p in workdir.iterdir()) == [
    'checkpoints',
    'config.json',
    'metrics.jsonl',
    'params.npz',
    'plots',
    'report.md',
    'summary.json',
  ]
  summary = json.loads((workdir / 'summary.json').read_text())
  for key in (
    'val_accuracy',
    'test_accuracy',
    'train_accuracy',
    'steps',
    'train_seconds',
    'compile_seconds',
    'examples_per_second',
    'backend',
    'jax_version',
  ):
    assert key in summary, key
  assert summary['steps'] == 60 and summary['backend'] == 'cpu'
  assert summary['val_accuracy'] > 0.6  # 60 steps of a 16-unit net reach about 0.74
  lines = [
    json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]
  assert [m['step'] for m in lines] == [20, 40, 60]
  for m in lines:
    assert set(m) >= {
      'step',
      'epoch',
      'learning_rate',
      'train_loss',
      'train_accuracy',
      'val_accuracy',
      'elapsed_s',
    }
  assert json.loads((workdir / 'config.json').read_text())['hidden_size'] == 16
  assert 'val_accuracy' in result.stdout and 'test_accuracy' in result.stdout
  assert 'examples/s' in result.stderr and 'left' in result.stderr  # progress lines


def test_eval_reports_the_saved_models_test_accuracy(trained):
  workdir, _ = trained
  result = run_main('--mode=eval', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  summary = json.loads((workdir / 'summary.json').read_text())
  assert f'test_accuracy {summary["test_accuracy"]:.4f}' in result.stdout


@pytest.mark.parametrize(
  'args, expected',
  [
    (['--config.hidden_size=0'], 'hidden_size'),
    (['--config.learning_rate=-0.1'], 'learning_rate'),
    (['--config.learning_rate=inf'], 'learning_rate'),
    (['--config.batch_size=0'], 'batch_size'),
    (['--config.batch_size=60000'], 'batch_size'),
    (['--config.dataset=cifar'], 'cifar'),
    (['--config.data_dir=/nonexistent/mnist'], '/nonexistent/mnist'),
    (['--config.hidden_size=abc'], 'hidden_size'),
    (['--config.no_such_field=1'], 'no_such_field'),
    (['--no_such_flag=1'], 'no_such_flag'),
    (['--mode=fly'], 'mode'),
    (['--config=configs/missing.py'], 'configs/missing.py'),
    (['--config.learning_rate=abc'], 'learning_rate'),
    (['--config.lr_decay=1.5'], 'lr_decay'),
    (['--config.lr_decay=0'], 'lr_decay'),
    (['--config.l2_reg=-1'], 'l2_reg'),
    (['--config.init_std=-1'], 'init_std'),
    (['--config.num_iters=0'], 'num_iters'),
    (['--config.eval_every=-1'], 'eval_every'),
    (['--config.seed=-1'], 'seed'),
    (['--config.train_eval_size=0'], 'train_eval_size'),
    (['--config.num_val=0'], 'num_val'),
    (['--config.num_val=60000'], 'num_val'),
    (['--config.optimizer=adagrad'], 'optimizer'),
    (['--config.data_source=csv'], 'data_source'),
    (['--config.checkpoint_every=-5'], 'checkpoint_every'),
    (['--config.keep_checkpoints=0'], 'keep_checkpoints'),
    (['--config.data_url=ftp://example.invalid/'], 'ftp://'),
    (['extra_argument'], 'extra_argument'),
    (['--mode=sweep'], 'sweep'),
  ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, args, expected):
  result = run_main('--config=configs/test.py', f'--workdir={tmp_path / "w"}', *args)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('Error:')]
  assert len(errors) == 1, result.stderr
  assert expected in errors[0]


def test_eval_without_a_trained_workdir_is_a_clear_error(tmp_path):
  result = run_main('--mode=eval', f'--workdir={tmp_path}')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'params.npz' in result.stderr


def test_workdir_that_is_a_file_is_refused(tmp_path):
  target = tmp_path / 'file'
  target.write_text('keep me')
  result = run_main('--config=configs/test.py', f'--workdir={target}')
  assert result.returncode != 0 and 'is a file' in result.stderr
  assert target.read_text() == 'keep me'


def run_sweep_main(tmp_path, *args):
  return run_main(
    '--mode=sweep',
    '--config=configs/sweep.py',
    f'--workdir={tmp_path / "w"}',
    '--config.num_iters=1',
    *args,
  )


@pytest.mark.parametrize(
  'args, expected',
  [
    (['--config.sweep.learning_rate=(0.1, -1.0)'], 'learning_rate'),
    (['--config.sweep.hidden_size=(0, 10)'], 'hidden_size'),
    (['--config.search=bayes'], 'search'),
    (['--config.search=random'], 'num_samples'),
    (['--config.models_per_chunk=-1'], 'models_per_chunk'),
  ],
)
def test_sweep_user_errors(tmp_path, args, expected):
  result = run_sweep_main(tmp_path, *args)
  assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr[
    -2000:
  ]
  errors = [line for line in result.stderr.splitlines() if line.startswith('Error:')]
  assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]


def test_workdir_below_a_file_is_refused(tmp_path):
  target = tmp_path / 'file'
  target.write_text('keep me')
  result = run_main('--config=configs/test.py', f'--workdir={target / "sub"}')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'cannot create workdir' in result.stderr and target.read_text() == 'keep me'


def test_corrupt_data_file_is_named(tmp_path):
  data_dir = tmp_path / 'mnist'
  data_dir.mkdir()
  for source in (REPO / 'data' / 'mnist').glob('*.gz'):
    (data_dir / source.name).write_bytes(source.read_bytes())
  labels = data_dir / 't10k-labels-idx1-ubyte.gz'
  labels.write_bytes(labels.read_bytes()[:100])
  result = run_main(
    '--config=configs/test.py',
    f'--workdir={tmp_path / "w"}',
    f'--config.data_dir={data_dir}',
  )
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 't10k-labels-idx1-ubyte.gz' in result.stderr


def test_eval_refuses_params_of_another_architecture(tmp_path, trained):
  import numpy as np

  workdir, _ = trained
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'config.json').write_text((workdir / 'config.json').read_text())
  np.savez(
    other / 'params.npz',
    W1=np.zeros((100, 8)),
    b1=np.zeros(8),
    W2=np.zeros((8, 10)),
    b2=np.zeros(10),
  )
  result = run_main('--mode=eval', f'--workdir={other}')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'do not fit' in result.stderr


def test_eval_refuses_a_corrupt_params_file(tmp_path, trained):
  workdir, _ = trained
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'config.json').write_text((workdir / 'config.json').read_text())
  (broken / 'params.npz').write_bytes(b'not a zip file')
  result = run_main('--mode=eval', f'--workdir={broken}')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'params.npz' in result.stderr


def test_predict_from_the_command_line(tmp_path, trained):
  from PIL import Image

  from mlp import data

  workdir, _ = trained
  dataset = data.load_dataset('mnist')
  digit = Image.fromarray(255 - dataset.test_images[0].reshape(28, 28)).resize(
    (120, 120)
  )
  canvas = Image.new('L', (200, 160), 255)
  canvas.paste(digit, (60, 20))
  good = tmp_path / 'digit.png'
  canvas.save(good)
  missing = tmp_path / 'missing.png'
  result = run_main(
    '--mode=predict', f'--workdir={workdir}', f'--images={good},{missing}'
  )
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  path, label, probability = result.stdout.strip().split('\t')
  assert path == str(good) and 0 <= int(label) <= 9 and 0 < float(probability) <= 1
  assert f'Error: {missing}' in result.stderr
  as_json = run_main(
    '--mode=predict', f'--workdir={workdir}', f'--images={good}', '--json'
  )
  assert as_json.returncode == 0, as_json.stderr
  assert len(json.loads(as_json.stdout)[0]['probabilities']) == 10


def test_compiled_programs_are_cached_across_runs(tmp_path):
  cache = tmp_path / 'cache'
  args = ['--config=configs/test.py', f'--compilation_cache_dir={cache}']
  env = {'JAX_LOG_COMPILES': '1'}  # JAX then logs cache hits as warnings
  first = run_main(*args, f'--workdir={tmp_path / "a"}', env=env)
  assert first.returncode == 0, first.stderr
  assert "cache hit for 'jit_train_segment'" not in first.stderr
  assert any(p.name.startswith('jit_train_segment') for p in cache.iterdir())
  second = run_main(*args, f'--workdir={tmp_path / "b"}', env=env)
  assert second.returncode == 0, second.stderr
  assert "cache hit for 'jit_train_segment'" in second.stderr
  summaries = [json.loads((tmp_path / w / 'summary.json').read_text()) for w in 'ab']
  assert summaries[0]['val_accuracy'] == summaries[1]['val_accuracy']
  assert summaries[1]['compilation_cache_dir'] == str(cache)


def test_an_unusable_compilation_cache_is_a_warning(tmp_path):
  (tmp_path / 'file').write_text('')
  result = run_main(
    '--config=configs/test.py',
    f'--workdir={tmp_path / "run"}',
    f'--compilation_cache_dir={tmp_path / "file" / "cache"}',
    '--config.write_plots=False',
  )
  assert result.returncode == 0, result.stderr
  assert 'Not caching compiled programs' in result.stderr
  summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
  assert summary['compilation_cache_dir'] is None
