"""TensorBoard events, read back with TensorBoard's own reader and HParams plugin.

The scalars are checked against `metrics.jsonl` / `curves.jsonl`, the HParams
sessions against `results.csv`; the kill-and-resume tests of
`test_mode_train.py` and `test_mode_sweep.py` check the events of resumed runs.
"""

import csv
import json
import math
import re

import numpy as np
import pytest

from mlp import hparams, tensorboard_events
from mlp.search import space
from tests.conftest import expected_scalars, read_hparams, read_scalars

pytest.importorskip(
  'tensorboard', reason='tensorboard (requirements-dev.txt) reads the events'
)


@pytest.mark.xdist_group('trained_workdir')
def test_train_scalars_equal_metrics_jsonl(trained_workdir):
  workdir, _ = trained_workdir
  rows = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert read_scalars(workdir / 'tensorboard') == expected_scalars(rows)


def _value(proto):
  kind = proto.WhichOneof('kind')
  return getattr(proto, kind)


@pytest.mark.xdist_group('sweep_workdir')
def test_sweep_sessions_equal_results_csv(sweep_workdir):
  from tensorboard.plugins.hparams import api_pb2

  workdir, _ = sweep_workdir
  config = json.loads((workdir / 'config.json').read_text())
  with open(workdir / 'results.csv') as f:
    results = list(csv.DictReader(f))
  summary = json.loads((workdir / 'summary.json').read_text())
  curves = {
    m['model']: m
    for m in map(json.loads, (workdir / 'curves.jsonl').read_text().splitlines())
  }
  multiplexer, runs = read_hparams(workdir / 'tensorboard')
  models = {f'model_{i:04d}' for i in curves}
  assert set(runs) == {'.'} | models and len(models) == len(results) == 8

  configs = [
    space.model_config(_config_dict(config), p)
    for p in space.points(_config_dict(config))
  ]
  keys = hparams.in_effect(configs)
  experiment = runs['.'][tensorboard_events.EXPERIMENT_TAG].experiment
  assert [h.name for h in experiment.hparam_infos] == list(keys)
  domains = {
    h.name: [_value(v) for v in h.domain_discrete.values]
    for h in experiment.hparam_infos
  }
  assert domains['learning_rate'] == [0.1, 0.3] and domains['optimizer'] == ['sgd']
  assert [m.name.tag for m in experiment.metric_infos] == list(
    tensorboard_events.METRICS
  )

  best = summary['best']
  for row in results:
    index = next(
      i
      for i, m in curves.items()
      if all(str(m['hyperparameters'][k]) == row[k] for k in m['hyperparameters'])
    )
    run = f'model_{index:04d}'
    start = runs[run][tensorboard_events.SESSION_START_TAG].session_start_info
    declared = {k: _value(v) for k, v in start.hparams.items()}
    assert set(declared) == set(keys)  # every model declares the same keys
    for field in ('hidden_size', 'learning_rate', 'l2_reg', 'num_iters', 'seed'):
      assert declared[field] == pytest.approx(float(row[field]), rel=1e-12)
    end = runs[run][tensorboard_events.SESSION_END_TAG].session_end_info
    diverged = row['diverged'] == 'True'
    assert end.status == (
      api_pb2.STATUS_FAILURE if diverged else api_pb2.STATUS_SUCCESS
    )
    # The dashboard's metric is the last value of the run's scalar.
    val = multiplexer.Scalars(run, 'val_accuracy')
    assert val[-1].value == np.float32(float(row['val_accuracy']))
    assert [e.step for e in val] == curves[index]['curves']['step']
    is_best = all(
      str(best[k]) == row[k] for k in ('hidden_size', 'learning_rate', 'l2_reg')
    )
    tags = multiplexer.Runs()[run]['scalars']
    assert ('test_accuracy' in tags) == is_best
    if is_best:
      (test,) = multiplexer.Scalars(run, 'test_accuracy')
      assert test.value == np.float32(best['test_accuracy'])
      assert test.step == curves[index]['curves']['step'][-1]


def _config_dict(config: dict):
  import ml_collections

  result = ml_collections.ConfigDict(config)
  for field, values in config['sweep'].items():
    result.sweep[field] = tuple(values)
  return result


def test_a_resumed_writer_adds_only_later_steps(tmp_path):
  """Events ahead of the checkpoint (written before a kill) are not repeated,
  and a record torn by the kill is skipped by both readers."""
  first = tensorboard_events.RunWriter(tmp_path)
  for step in (10, 20, 30):
    first.scalars(step, {'val_accuracy': step / 100, 'train_loss': 1 / step})
  (path,) = tmp_path.glob('events.out.tfevents.*')
  whole = path.read_bytes()
  path.write_bytes(whole + whole[-30:-5])  # a torn last record
  second = tensorboard_events.RunWriter(tmp_path)
  assert second.recorded == {'val_accuracy': 30, 'train_loss': 30}
  for step in (20, 30, 40):
    second.scalars(step, {'val_accuracy': step / 100, 'train_loss': 1 / step})
  second.scalars(40, {'test_accuracy': 0.5})
  second.scalars(40, {'test_accuracy': 0.5})
  assert read_scalars(tmp_path) == {
    'val_accuracy': [(s, float(np.float32(s / 100))) for s in (10, 20, 30, 40)],
    'train_loss': [(s, float(np.float32(1 / s))) for s in (10, 20, 30, 40)],
    'test_accuracy': [(40, 0.5)],
  }
  assert not math.isnan(read_scalars(tmp_path)['train_loss'][-1][1])


def test_the_hparams_dashboard_lists_the_models_in_chromium(tmp_path):
  """`tensorboard --logdir` on 127.0.0.1 and its HParams dashboard in headless
  Chromium: the table lists every model. The events are a sweep's, written by
  `SweepEvents` without training (the other tests check them against a run)."""
  from bench import browser

  if browser.chromium() is None:
    pytest.skip('Chromium is not installed (Debian: apt-get install chromium)')
  pytest.importorskip('websocket', reason='websocket-client drives Chromium')
  configs = [
    {'hidden_size': 8, 'learning_rate': lr, 'l2_reg': 1e-4, 'optimizer': 'sgd'}
    for lr in (0.05, 0.1, 0.2, 0.4, 0.8)
  ]
  events = tensorboard_events.SweepEvents(
    tmp_path / 'sweep' / 'tensorboard',
    configs,
    ('hidden_size', 'learning_rate', 'l2_reg', 'optimizer'),
  )
  for step in (20, 40):
    metrics = {tag: [step / 100] * 5 for tag in tensorboard_events.SCALARS}
    events.evaluation(range(5), {**metrics, 'step': [step] * 5})
  events.finish(dict.fromkeys(range(5), False), (2, 40, 0.5))
  text, png = browser.hparams_page(tmp_path / 'sweep' / 'tensorboard', 'model_0004')
  assert {f'model_{i:04d}' for i in range(5)} <= set(re.findall(r'model_\d{4}', text))
  assert 'learning_rate' in text and png.startswith(b'\x89PNG')
