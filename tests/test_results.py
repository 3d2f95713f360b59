"""Sweep results tables: seeds as repeats of a configuration, and the number format."""

import csv
import json
import types

import numpy as np
import pytest

from mlp import report, results, sweep_plots
from mlp import workdir as workdir_lib

FIELDS = ['hidden_size', 'learning_rate', 'l2_reg', 'num_iters', 'seed']


def model(index, learning_rate, seed, val_accuracy, diverged=False):
  config = {
    'hidden_size': 8,
    'learning_rate': learning_rate,
    'l2_reg': 1e-4,
    'num_iters': 60,
    'seed': seed,
  }
  return types.SimpleNamespace(
    index=index,
    config=config,
    val_accuracy=val_accuracy,
    train_accuracy=val_accuracy + 0.01,
    final_loss=0.5,
    diverged=diverged,
    history={'step': [60], 'val_accuracy': [val_accuracy]},
    search={},
  )


# lr 0.1: one lucky seed (the best single model) but the lower mean; lr 0.3:
# the best mean; lr 1.0: the best seeds, but one of them diverged.
MODELS = [
  model(0, 0.1, 0, 0.97),
  model(1, 0.1, 1, 0.85),
  model(2, 0.1, 2, 0.86),
  model(3, 0.3, 0, 0.93),
  model(4, 0.3, 1, 0.95),
  model(5, 0.3, 2, 0.94),
  model(6, 1.0, 0, 0.98),
  model(7, 1.0, 1, 0.10, diverged=True),
  model(8, 1.0, 2, 0.99),
]


def test_one_row_per_configuration_ranked_by_mean():
  rows = results.aggregate_rows(MODELS, FIELDS)
  assert [r['learning_rate'] for r in rows] == [0.3, 0.1, 1.0]  # diverged last
  best = rows[0]
  assert 'seed' not in best
  assert best['num_seeds'] == 3 and best['num_diverged'] == 0
  assert best['val_accuracy_mean'] == pytest.approx(0.94, abs=1e-12)
  assert best['val_accuracy_std'] == pytest.approx(0.01, abs=1e-12)  # n - 1
  assert (best['val_accuracy_min'], best['val_accuracy_max']) == (0.93, 0.95)
  assert rows[2]['num_diverged'] == 1


def test_the_pick_is_the_best_seed_of_the_best_mean():
  assert results.best_model(MODELS, FIELDS).index == 4
  # One seed: the best single model that did not diverge, the earlier on ties.
  single = [model(0, 0.1, 0, 0.9), model(1, 0.3, 0, 0.95), model(2, 1.0, 0, 0.95)]
  assert results.best_model(single, FIELDS).index == 1
  assert results.best_model([model(0, 0.1, 0, 0.9, diverged=True)], FIELDS) is None


def test_repeats_get_an_aggregate_table_and_a_per_seed_one(tmp_path):
  ranked = sorted(MODELS, key=lambda r: (r.diverged, -r.val_accuracy, r.index))
  results.write(tmp_path, ranked, FIELDS)
  with open(tmp_path / 'results.csv') as f:
    aggregate = list(csv.DictReader(f))
  with open(tmp_path / 'results_per_seed.csv') as f:
    per_seed = list(csv.DictReader(f))
  assert list(aggregate[0]) == [*FIELDS[:4], *results.SEED_COLUMNS, 'picked']
  assert [float(r['learning_rate']) for r in aggregate] == [0.3, 0.1, 1.0]
  assert [int(r['seed']) for r in per_seed[:3]] == [2, 0, 0]  # 0.99, 0.98, 0.97
  assert (
    (tmp_path / 'results.md')
    .read_text()
    .splitlines()[4]
    .startswith('| 8 | 0.3 | 0.0001 | 60 | 3 | 0.94 | 0.01 | 0.93 | 0.95 | 0.95 | 0 |')
  )
  assert (tmp_path / 'results_per_seed.md').is_file()
  assert len((tmp_path / 'curves.jsonl').read_text().splitlines()) == 9
  # The plots read the mean, and a configuration with a diverged seed as diverged.
  plotted = sweep_plots.read_results(tmp_path / 'results.csv')
  assert [r['val_accuracy'] for r in plotted] == [
    float(r['val_accuracy_mean']) for r in aggregate
  ]
  assert [r['diverged'] for r in plotted] == [False, False, True]
  assert sweep_plots._varying_fields(plotted) == ['learning_rate']
  # The report's table is the configurations'.
  from configs import sweep as sweep_config

  workdir_lib.write_json(tmp_path / 'config.json', sweep_config.get_config().to_dict())
  workdir_lib.write_json(tmp_path / 'summary.json', {'num_models': 9, 'best': None})
  text = report.write_sweep_report(tmp_path).read_text()
  assert '## Top 3 of 3 configurations' in text and 'results_per_seed.md' in text


def test_one_seed_keeps_one_row_per_model(tmp_path):
  single = [model(0, 0.1, 0, 0.9), model(1, 0.3, 0, 0.95)]
  results.write(tmp_path, single[::-1], FIELDS)
  with open(tmp_path / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == [*FIELDS, *results.METRIC_COLUMNS, 'picked']
  assert not (tmp_path / 'results_per_seed.csv').exists()
  assert (
    json.loads((tmp_path / 'curves.jsonl').read_text().splitlines()[0])['model'] == 0
  )


def test_one_number_format():
  values = [0.97926, 0.1060, 1e-4, 2e-3, 2.30164, 34.5, 55000.0, 0.0, 300, 55000, True]
  assert [results.format_value(v) for v in values] == [
    '0.9793',
    '0.106',
    '0.0001',
    '0.002',
    '2.302',
    '34.5',
    '55,000',
    '0',
    '300',
    '55,000',
    'yes',
  ]
  assert results.format_value(float('nan')) == 'nan'
  assert results.format_value(np.float64(0.5)) == '0.5'
