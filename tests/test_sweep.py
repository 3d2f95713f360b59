"""--mode=sweep: each vmapped model equals its run alone; divergence, chunks, devices."""

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from configs import test as test_config
from mlp import grid, run, sweep, train
from mlp.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def sweep_config(**swept) -> ml_collections.ConfigDict:
  config = test_config.get_config()
  config.sweep = ml_collections.ConfigDict(
    {f: swept.get(f, ()) for f in grid.SWEEPABLE}
  )
  config.search = 'grid'
  config.num_samples = 0
  config.models_per_chunk = 0
  return config


def read_results(workdir: Path) -> list[dict]:
  with open(workdir / 'results.csv') as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def mixed_sweep(tmp_path_factory):
  """Two hidden sizes x two learning rates x two lambdas, one seed."""
  workdir = tmp_path_factory.mktemp('sweep')
  config = sweep_config(
    hidden_size=(8, 16), learning_rate=(0.1, 0.3), l2_reg=(1e-4, 1e-2)
  )
  summary = sweep.run_sweep(config, str(workdir))
  return config, workdir, summary


def test_every_model_equals_its_run_alone(mixed_sweep, tmp_path):
  config, workdir, summary = mixed_sweep
  rows = read_results(workdir)
  assert len(rows) == summary['num_models'] == 8
  for row in rows:
    alone = grid.model_config(
      config,
      {
        'hidden_size': int(row['hidden_size']),
        'learning_rate': float(row['learning_rate']),
        'l2_reg': float(row['l2_reg']),
      },
    )
    result = run.train_and_evaluate(
      alone, str(tmp_path / row['hidden_size'] / row['learning_rate'] / row['l2_reg'])
    )
    assert float(row['val_accuracy']) == pytest.approx(
      result['val_accuracy'], abs=1e-9
    ), row
  best = summary['best']
  alone_dir = (
    tmp_path
    / str(best['hidden_size'])
    / repr(best['learning_rate'])
    / repr(best['l2_reg'])
  )
  alone_params = np.load(alone_dir / 'params.npz')
  best_params = np.load(workdir / 'best_params.npz')
  for name in ('W1', 'b1', 'W2', 'b2'):
    np.testing.assert_allclose(
      best_params[name], alone_params[name], rtol=1e-5, atol=1e-6
    )


def test_results_files_follow_the_contract(mixed_sweep):
  _, workdir, summary = mixed_sweep
  rows = read_results(workdir)
  assert list(rows[0]) == [
    'hidden_size',
    'learning_rate',
    'l2_reg',
    'num_iters',
    'seed',
    'val_accuracy',
    'train_accuracy',
    'final_loss',
    'diverged',
  ]
  accuracies = [float(r['val_accuracy']) for r in rows]
  assert accuracies == sorted(accuracies, reverse=True)
  assert summary['best']['val_accuracy'] == accuracies[0]
  assert 0 < summary['best']['test_accuracy'] <= 1
  assert {'num_models', 'sweep_seconds', 'compile_seconds'} <= set(summary)
  on_disk = json.loads((workdir / 'summary.json').read_text())
  assert on_disk['best'] == summary['best']
  assert (workdir / 'results.md').read_text().startswith('| hidden_size |')
  curves = [
    json.loads(line) for line in (workdir / 'curves.jsonl').read_text().splitlines()
  ]
  assert len(curves) == 8 and curves[0]['curves']['step'] == [20, 40, 60]
  assert len(curves[0]['curves']['val_accuracy']) == 3
  assert curves[0]['hyperparameters']['learning_rate'] in (0.1, 0.3)


def test_one_compile_per_hidden_size(monkeypatch, tmp_path):
  traces = []
  original = train.train_segment

  def counting(state, hparams, data, static, end_step, **kwargs):
    traces.append(static.hidden_size)
    return original(state, hparams, data, static, end_step, **kwargs)

  monkeypatch.setattr(train, 'train_segment', counting)
  config = sweep_config(hidden_size=(8, 12), learning_rate=(0.1, 0.2, 0.3), seed=(0, 1))
  config.models_per_chunk = 2  # three chunks per size, still one program per size
  sweep.run_sweep(config, str(tmp_path))
  assert sorted(traces) == [8, 12]


def test_a_diverged_model_is_marked_and_disturbs_nothing(tmp_path):
  mixed = sweep.run_sweep(
    sweep_config(learning_rate=(0.3, 1e6)), str(tmp_path / 'mixed')
  )
  sweep.run_sweep(sweep_config(learning_rate=(0.3, 0.2)), str(tmp_path / 'alone'))
  mixed_rows, alone_rows = (
    read_results(tmp_path / 'mixed'),
    read_results(tmp_path / 'alone'),
  )
  assert (
    mixed_rows[-1]['diverged'] == 'True'
    and float(mixed_rows[-1]['learning_rate']) == 1e6
  )
  assert mixed['best']['learning_rate'] == 0.3 and mixed['num_diverged'] == 1
  same = next(r for r in alone_rows if float(r['learning_rate']) == 0.3)
  assert mixed_rows[0]['val_accuracy'] == same['val_accuracy']
  assert mixed_rows[0]['final_loss'] == same['final_loss']


def test_chunked_equals_unchunked(tmp_path):
  results = {}
  for chunk in (0, 1):
    config = sweep_config(learning_rate=(0.1, 0.3), init_std=(1e-2, 1e-3))
    config.models_per_chunk = chunk
    sweep.run_sweep(config, str(tmp_path / str(chunk)))
    results[chunk] = read_results(tmp_path / str(chunk))
  assert [r['val_accuracy'] for r in results[0]] == [
    r['val_accuracy'] for r in results[1]
  ]
  for a, b in zip(results[0], results[1], strict=True):
    assert float(a['final_loss']) == pytest.approx(float(b['final_loss']), rel=1e-5)


def test_sharded_over_four_devices_equals_one_device(mixed_sweep, tmp_path):
  _, workdir, _ = mixed_sweep
  script = textwrap.dedent(f"""
    import jax
    jax.config.update('jax_num_cpu_devices', 4)
    import ml_collections
    from tests.test_sweep import sweep_config
    from mlp import sweep
    assert len(jax.devices()) == 4
    config = sweep_config(hidden_size=(8, 16), learning_rate=(0.1, 0.3), l2_reg=(1e-4, 1e-2))
    summary = sweep.run_sweep(config, {str(tmp_path)!r})
    assert summary['num_devices'] == 4
  """)
  result = subprocess.run(
    [sys.executable, '-c', script],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  sharded, single = read_results(tmp_path), read_results(workdir)
  for a, b in zip(sharded, single, strict=True):
    assert a['val_accuracy'] == b['val_accuracy']
    assert float(a['final_loss']) == pytest.approx(float(b['final_loss']), rel=1e-5)


def test_grid_is_the_cartesian_product():
  config = sweep_config(hidden_size=(8, 16), learning_rate=(0.1, 0.2, 0.3))
  points = grid.points(config)
  assert len(points) == 6
  assert {(p['hidden_size'], p['learning_rate']) for p in points} == {
    (h, lr) for h in (8, 16) for lr in (0.1, 0.2, 0.3)
  }


def test_random_search_draws_log_uniform_points():
  config = sweep_config(learning_rate=(1e-4, 1.0), hidden_size=(8, 16))
  config.search = 'random'
  config.num_samples = 400
  points = grid.points(config)
  rates = np.array([p['learning_rate'] for p in points])
  assert len(points) == 400 and rates.min() >= 1e-4 and rates.max() <= 1.0
  # Log-uniform: about a quarter of the draws in each decade of the four.
  share = np.mean((rates >= 1e-2) & (rates < 1e-1))
  assert 0.18 < share < 0.32
  assert {p['hidden_size'] for p in points} == {8, 16}


@pytest.mark.parametrize(
  'swept, message',
  [
    ({'learning_rate': (0.1, -1.0)}, 'learning_rate'),
    ({'hidden_size': (0,)}, 'hidden_size'),
  ],
)
def test_bad_grid_values_are_user_errors(swept, message):
  with pytest.raises(UserError, match=message):
    grid.points(sweep_config(**swept))


def test_unknown_sweep_field_is_a_user_error():
  config = sweep_config()
  config.sweep.optimizer = ('sgd',)
  with pytest.raises(UserError, match='cannot be swept'):
    grid.points(config)


def test_sweep_from_the_command_line(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      'main.py',
      '--mode=sweep',
      '--config=configs/sweep.py',
      f'--workdir={tmp_path}',
      '--config.num_iters=20',
      '--config.batch_size=32',
      '--config.sweep.hidden_size=(8,)',
      '--config.sweep.learning_rate=(0.1, 0.3)',
      '--config.sweep.l2_reg=(1e-4, 1e-3)',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(read_results(tmp_path)) == 4
  assert '| hidden_size | learning_rate | l2_reg |' in result.stdout
  assert 'model-examples/s' in result.stderr
