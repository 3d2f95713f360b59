"""--mode=sweep: each vmapped model equals its run alone; chunks, devices, resume."""

import csv
import functools
import json
import signal
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from configs import sweep as sweep_lib
from mlp import classifier, loop
from mlp.errors import UserError
from mlp.modes import sweep, train
from mlp.search import space
from tests.conftest import (
  REPO,
  SWEEP,
  child_env,
  expected_scalars,
  read_scalars,
  run_main,
)

# With `pytest -n`, the tests that share the `sweep_workdir` fixture run in one
# worker, which computes it once.
pytestmark = pytest.mark.xdist_group('sweep_workdir')

GRID = {'hidden_size': (8, 16), 'learning_rate': (0.1, 0.3), 'l2_reg': (1e-4, 1e-2)}


SWEEP_H8 = [
  '--config.sweep.hidden_size=(8,)'
  if arg.startswith('--config.sweep.hidden_size')
  else arg
  for arg in SWEEP
]


def sweep_config(**changes) -> ml_collections.ConfigDict:
  """The config of `SWEEP` (so its programs come from the compilation cache),
  with `changes` (`sweep.FIELD` for the swept tuples)."""
  config = sweep_lib.get_config()
  config.update(
    num_iters=60,
    eval_every=20,
    batch_size=32,
    train_eval_size=500,
    models_per_chunk=2,
    write_plots=False,
  )
  config.sweep.update(GRID)
  for field, value in changes.items():
    if field.startswith('sweep.'):
      config.sweep[field.removeprefix('sweep.')] = value
    else:
      config[field] = value
  return config


def read_results(workdir: Path) -> list[dict]:
  with open(workdir / 'results.csv') as f:
    return list(csv.DictReader(f))


@pytest.fixture
def cli_sweep(sweep_workdir):
  return sweep_workdir


def test_each_model_equals_its_run_alone(cli_sweep, tmp_path, mnist_loaded_once):
  """Every value of every swept field, and the best model, trained alone."""
  workdir, _ = cli_sweep
  rows = read_results(workdir)
  assert len(rows) == 8
  summary = json.loads((workdir / 'summary.json').read_text())
  best = summary['best']
  diagonal = {('0.1', '0.0001'), ('0.3', '0.01')}

  def is_best(row):
    return all(float(row[f]) == best[f] for f in GRID)

  checked = [
    r for r in rows if (r['learning_rate'], r['l2_reg']) in diagonal or is_best(r)
  ]
  assert len(checked) >= 4 and any(is_best(r) for r in checked)
  config = ml_collections.ConfigDict(json.loads((workdir / 'config.json').read_text()))
  config.write_plots = False
  for row in checked:
    point = {f: float(row[f]) for f in GRID}
    alone_dir = tmp_path / '_'.join(row[f] for f in GRID)
    result = train.run(space.model_config(config, point), str(alone_dir))
    assert float(row['val_accuracy']) == pytest.approx(
      result['val_accuracy'], abs=1e-9
    ), row
    if is_best(row):
      alone_params = np.load(alone_dir / 'params.npz')
      best_params = np.load(workdir / 'best_params.npz')
      for name in ('W1', 'b1', 'W2', 'b2'):
        np.testing.assert_allclose(
          best_params[name], alone_params[name], rtol=1e-5, atol=1e-6
        )


def test_results_files_follow_the_contract(cli_sweep):
  workdir, result = cli_sweep
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
    'steps',
    'picked',
  ]
  accuracies = [float(r['val_accuracy']) for r in rows]
  assert accuracies == sorted(accuracies, reverse=True)
  assert {r['steps'] for r in rows} == {'60'}
  assert [r['picked'] for r in rows] == ['True'] + ['False'] * 7
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['num_models'] == 8
  assert summary['best']['val_accuracy'] == accuracies[0]
  assert 0 < summary['best']['test_accuracy'] <= 1
  assert {'sweep_seconds', 'compile_seconds'} <= set(summary)
  caption, _, table = (workdir / 'results.md').read_text().split('\n', 2)
  assert caption.startswith('Picked (`picked` = yes): model ')
  assert caption.endswith(', by the best val accuracy.')
  assert table.startswith('| hidden_size |')
  curves = [json.loads(x) for x in (workdir / 'curves.jsonl').read_text().splitlines()]
  assert len(curves) == 8 and curves[0]['curves']['step'] == [20, 40, 60]
  assert len(curves[0]['curves']['val_accuracy']) == 3
  assert curves[0]['hyperparameters']['learning_rate'] in (0.1, 0.3)
  assert '| hidden_size | learning_rate | l2_reg |' in result.stdout
  assert 'model-examples/s' in result.stderr
  # It ends as train does: the best model, its accuracies, where things are.
  best = summary['best']
  assert f'Top 8 of 8 models by val accuracy (every row in {workdir}/results.md):' in (
    result.stdout
  )
  assert f'Best model: hidden_size {best["hidden_size"]}, ' in result.stdout
  assert (
    f'val_accuracy {best["val_accuracy"]:.4f}  test_accuracy {best["test_accuracy"]:.4f}'
    in result.stdout
  )
  assert result.stdout.endswith(f'Report: {workdir}/report.md\n')  # no plots asked


def test_eval_of_a_sweep_workdir_evaluates_the_best_model(cli_sweep):
  workdir, _ = cli_sweep
  result = run_main('--mode=eval', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  best = json.loads((workdir / 'summary.json').read_text())['best']
  assert f'test_accuracy {best["test_accuracy"]:.4f}' in result.stdout
  assert 'best_params.npz' in result.stdout


def test_the_model_card_of_a_sweep_is_its_best_model(cli_sweep):
  """`--mode=serve`'s card of a sweep workdir (`mlp.classifier.model_card`):
  its best params, the pick's accuracies and steps, and its config (the swept
  fields set to the pick's values, no space)."""
  workdir, _ = cli_sweep
  summary = json.loads((workdir / 'summary.json').read_text())
  config = json.loads((workdir / 'config.json').read_text())
  best = summary['best']
  swept = [field for field, values in config['sweep'].items() if values]
  card = classifier.model_card(classifier.load(workdir))
  assert card['name'] == f'{workdir.name} (best of the sweep)'
  assert card['params'] == 'best_params.npz'
  assert card['layers'] == [784, best['hidden_size'], 10]
  assert (card['val_accuracy'], card['test_accuracy'], card['steps']) == (
    best['val_accuracy'],
    best['test_accuracy'],
    best['steps'],
  )
  assert 'sweep' not in card['config']
  assert {f: card['config'][f] for f in swept} == {f: best[f] for f in swept}
  others = {k: v for k, v in config.items() if k != 'sweep' and k not in swept}
  assert {k: card['config'][k] for k in others} == others
  assert all([f, best[f]] in card['options'] for f in swept if f != 'seed')


def test_killed_and_resumed_equals_uninterrupted(cli_sweep, tmp_path):
  whole, _ = cli_sweep
  # Each chunk of two: three evaluations, then its end; so the 6th checkpoint
  # has the first chunk finished and the second one at step 40.
  killed = run_main(
    *SWEEP, f'--workdir={tmp_path}', env={'MLP_KILL_AFTER_CHECKPOINT': '6'}
  )
  assert killed.returncode == -signal.SIGKILL
  assert not (tmp_path / 'results.csv').exists()
  resumed = run_main(*SWEEP, f'--workdir={tmp_path}')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert (
    'Resuming from' in resumed.stderr
    and '0 round(s) done, and 2 model(s) of the next' in resumed.stderr
  )
  for name in ('results.csv', 'curves.jsonl'):
    assert (tmp_path / name).read_text() == (whole / name).read_text()
  for name, value in np.load(whole / 'best_params.npz').items():
    np.testing.assert_array_equal(np.load(tmp_path / 'best_params.npz')[name], value)
  # TensorBoard: the chunk in progress at the kill has two event files, which
  # together hold each evaluation once, in order, as curves.jsonl does.
  events = tmp_path / 'tensorboard'
  assert len(list((events / 'model_0002').glob('events.out.tfevents.*'))) == 2
  for line in (tmp_path / 'curves.jsonl').read_text().splitlines():
    model = json.loads(line)
    curves = model['curves']
    rows = [{k: v[i] for k, v in curves.items()} for i in range(len(curves['step']))]
    found = read_scalars(events / f'model_{model["model"]:04d}')
    assert {k: v for k, v in found.items() if k != 'test_accuracy'} == (
      expected_scalars(rows)
    )


def test_one_compile_per_hidden_size(monkeypatch, tmp_path, mnist_loaded_once):
  traces = []
  original = loop.train_segment

  # Named as the original, so that its programs are the sweep's (cached).
  @functools.wraps(original)
  def counting(*args, static, **kwargs):
    traces.append(static.hidden_size)
    return original(*args, static=static, **kwargs)

  monkeypatch.setattr(loop, 'train_segment', counting)
  sweep.run(sweep_config(), str(tmp_path))  # two chunks of each size
  assert sorted(traces) == [8, 16]


def test_a_diverged_model_is_marked_and_disturbs_nothing(
  cli_sweep, tmp_path, mnist_loaded_once
):
  summary = sweep.run(
    sweep_config(**{'sweep.learning_rate': (0.3, 1e6)}), str(tmp_path)
  )
  rows, whole = read_results(tmp_path), read_results(cli_sweep[0])
  diverged = [r for r in rows if r['diverged'] == 'True']
  assert summary['num_diverged'] == len(diverged) == 4
  assert {float(r['learning_rate']) for r in diverged} == {1e6}
  assert rows[-4:] == diverged  # ranked last
  assert summary['best']['learning_rate'] == 0.3
  # The models trained beside a diverging one are the sweep's own.
  same = [r for r in whole if float(r['learning_rate']) == 0.3]
  assert sorted(rows[:4], key=str) == sorted(same, key=str)


def test_chunked_equals_unchunked(cli_sweep, tmp_path, mnist_loaded_once):
  """The H 8 models in one chunk of four, against two chunks of two."""
  config = sweep_config(models_per_chunk=0, **{'sweep.hidden_size': (8,)})
  sweep.run(config, str(tmp_path))
  chunked = [r for r in read_results(cli_sweep[0]) if r['hidden_size'] == '8']
  for a, b in zip(read_results(tmp_path), chunked, strict=True):
    assert a['val_accuracy'] == b['val_accuracy']
    assert float(a['final_loss']) == pytest.approx(float(b['final_loss']), rel=1e-5)


def test_chunks_stack_the_fields_that_vary_over_the_whole_grid(
  cli_sweep, tmp_path, monkeypatch, mnist_loaded_once
):
  """lr (0.1, 0.2, 0.3) x lambda in chunks of four: the second chunk (two
  models and padding) varies only lr, yet the first one's program serves it;
  each model trains as in any other chunk, and the padding is not counted."""
  from mlp.progress import Progress

  closed = []
  close = Progress.close
  monkeypatch.setattr(
    Progress,
    'close',
    lambda self: closed.append((self.done, self.total)) or close(self),
  )
  config = sweep_config(
    models_per_chunk=4,
    **{'sweep.hidden_size': (8,), 'sweep.learning_rate': (0.1, 0.2, 0.3)},
  )
  summary = sweep.run(config, str(tmp_path))
  assert summary['batched_fields'] == ['learning_rate', 'l2_reg']
  assert closed[-1] == (6 * 60 * 32, 6 * 60 * 32)  # models x steps x batch
  rows = {(r['learning_rate'], r['l2_reg']): r for r in read_results(tmp_path)}
  assert len(rows) == 6
  for row in read_results(cli_sweep[0]):
    if row['hidden_size'] == '8':
      same = rows[(row['learning_rate'], row['l2_reg'])]
      assert same['val_accuracy'] == row['val_accuracy']


def test_sharded_over_four_devices_equals_one_device(cli_sweep, tmp_path):
  """The H 8 half of `SWEEP` on four devices equals those models of the
  one-device sweep (a model's result does not depend on the others')."""
  whole, _ = cli_sweep
  result = subprocess.run(
    [sys.executable, 'main.py', *SWEEP_H8, f'--workdir={tmp_path}'],
    cwd=REPO,
    capture_output=True,
    text=True,
    env=child_env({'JAX_NUM_CPU_DEVICES': '4'}),
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((tmp_path / 'summary.json').read_text())['num_devices'] == 4
  of_h8 = [row for row in read_results(whole) if row['hidden_size'] == '8']
  assert len(of_h8) == 4
  for a, b in zip(read_results(tmp_path), of_h8, strict=True):
    for field in ('learning_rate', 'l2_reg', 'val_accuracy'):
      assert a[field] == b[field]
    assert float(a['final_loss']) == pytest.approx(float(b['final_loss']), rel=1e-5)


@pytest.mark.parametrize(
  'field, value, expected',
  [
    ('sweep.learning_rate', (0.1, -1.0), r'config.sweep.learning_rate holds -1\.0'),
    ('search', 'bayes', 'search'),
    ('search', 'random', 'num_samples'),
    ('models_per_chunk', -1, 'models_per_chunk'),
    ('sweep.learning_rate', (0.1, 'fast'), "holds 'fast'.* must be numbers"),
    ('sweep.hidden_size', (16.5,), 'holds 16.5.* must be whole numbers'),
    ('batch_size', 60000, 'at most the 55000 training images'),
    ('models_per_chunk', 10**7, 'needs about .* for 10000000 models'),
  ],
)
def test_sweep_user_errors_leave_nothing_behind(tmp_path, field, value, expected):
  config = sweep_config(**{field: value})
  with pytest.raises(UserError, match=expected):
    sweep.run(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_a_best_configuration_without_the_best_model_is_trained_again(
  monkeypatch, tmp_path, mnist, mnist_loaded_once
):
  """When the pick (the best seed of the best configuration by its mean) is
  not the best single model, it is trained again, as a job of its own, and
  `best_params.npz` holds its params. Forced here on the H 8 half of the
  grid (its compiled program is the one of `SWEEP`)."""
  from mlp import evaluation
  from mlp import results as results_lib

  picks = []

  def pick_the_last(results, fields):
    picks.append(results_lib.configurations(results, fields)[-1][0])
    return picks[-1]

  monkeypatch.setattr(results_lib, 'best_model', pick_the_last)
  # Seeds as repeats: only then may the pick differ from the best single model.
  config = sweep_config(**{'sweep.hidden_size': (8,), 'sweep.seed': (0, 1)})
  summary = sweep.run(config, str(tmp_path))
  with open(tmp_path / 'results_per_seed.csv') as f:
    rows = list(csv.DictReader(f))
  (pick,) = picks
  best_single = max(float(r['val_accuracy']) for r in rows)
  assert pick.val_accuracy < best_single  # not the best model
  assert summary['best']['learning_rate'] == pick.config['learning_rate']
  assert summary['best']['l2_reg'] == pick.config['l2_reg']
  assert summary['best']['val_accuracy'] == pick.val_accuracy
  params = dict(np.load(tmp_path / 'best_params.npz'))
  val = evaluation.split_accuracy(params, mnist.val_images, mnist.val_labels)
  assert val == pick.val_accuracy
