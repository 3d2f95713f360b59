"""The public search API (`mlp.search.api`) on tiny synthetic data: what it
returns, what it writes, and the mistakes it refuses before writing anything."""

import json

import numpy as np
import pytest

from configs import sweep as sweep_config
from mlp.errors import UserError
from mlp.search import api, space


def synthetic(n=240, features=12, classes=3, seed=0):
  """Inputs whose class is the argmax of a fixed projection: learnable."""
  rng = np.random.default_rng(seed)
  projection = rng.normal(size=(features, classes))
  x = rng.random((n, features)).astype(np.float32)
  y = np.argmax(x @ projection, axis=1).astype(np.int32)
  third = n // 3
  return (
    x[:third],
    y[:third],
    x[third : 2 * third],
    y[third : 2 * third],
    x[2 * third :],
    y[2 * third :],
  )


SETTINGS = dict(
  hidden_size=4,
  batch_size=16,
  num_iters=40,
  eval_every=10,
  train_eval_size=40,
  num_val=20,
  init='he',
  models_per_chunk=2,
)


def test_a_halving_search_returns_its_table_best_params_and_members(tmp_path):
  result = api.search(
    data=synthetic(),
    space={'learning_rate': space.log_uniform(0.05, 0.5), 'l2_reg': (0.0, 1e-3)},
    workdir=tmp_path,
    strategy='halving',
    num_samples=4,
    min_iters=10,
    max_iters=40,
    eta=2,
    **SETTINGS,
  )
  assert len(result.table) == len(result.members) == 4
  steps = sorted(int(r['steps']) for r in result.table)
  assert steps == [10, 10, 20, 40]  # rungs of 4, 2 and 1 models
  (picked,) = [r for r in result.table if r['picked']]
  assert picked['steps'] == 40
  assert result.summary['best']['val_accuracy'] == picked['val_accuracy']
  assert result.best_params['W1'].shape == (12, 4)
  history = result.members[0].history
  assert history['step'] == sorted(history['step']) and history['step'][0] == 10
  for name in ('results.csv', 'results.md', 'curves.jsonl', 'summary.json'):
    assert (tmp_path / name).is_file()
  assert json.loads((tmp_path / 'summary.json').read_text())['num_models'] == 4


@pytest.mark.parametrize(
  'change, expected',
  [
    ({'space': {'learning_rat': (0.1,)}}, 'unknown field'),
    ({'bogus': 3}, 'unknown field'),
    (
      {'data': synthetic()[:2] + (np.zeros((5, 12)), np.zeros(4)) + synthetic()[4:]},
      'the val split has 5 inputs but 4 labels',
    ),
    ({'strategy': 'grid', 'space': {'learning_rate': ('log', 0.1, 1.0)}}, 'is a range'),
  ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, change, expected):
  arguments = dict(
    data=synthetic(),
    space={'learning_rate': (0.1, 0.2)},
    workdir=tmp_path / 'w',
    strategy='grid',
    **SETTINGS,
  )
  with pytest.raises(UserError, match=expected):
    api.search(**{**arguments, **change})
  assert not (tmp_path / 'w').exists()


def test_a_checkpoint_of_another_search_is_refused(tmp_path):
  from mlp import data, loop
  from mlp.progress import Progress
  from mlp.search import population
  from mlp.search.grid import GridSearch

  config = space.model_config(sweep_config.get_config(), {})
  trainer = loop.Trainer(tmp_path, 0, 1, Progress(1))
  trainer.finished = {population.SEARCH: {'fingerprint': {'name': 'pbt'}}}
  pop = population.Population(
    [config],
    data.from_arrays(*(synthetic()[i : i + 2] for i in (0, 2, 4))),
    ('learning_rate',),
    trainer,
    lambda s: 1,
  )
  with pytest.raises(UserError, match=r'hold the state of another search \(pbt\)'):
    population.run(GridSearch(1), pop)


def test_a_models_own_hyperparameter_is_swept_like_the_tables(tmp_path):
  from tests.test_models import LINEAR  # a linear model with an L1 penalty

  result = api.search(
    data=synthetic(),
    space={'l1_reg': (0.0, 0.05), 'learning_rate': (0.5,)},
    workdir=tmp_path,
    model=LINEAR,
    **SETTINGS,
  )
  rows = {r['l1_reg']: r for r in result.table}
  assert set(rows) == {0.0, 0.05}
  losses = {m.config['l1_reg']: m.history['train_loss'][-1] for m in result.members}
  assert losses[0.05] > losses[0.0]  # the loss reads the member's own value
  assert set(result.best_params) == {'w', 'b'}
  with pytest.raises(UserError, match='l1_reg'):
    api.search(
      data=synthetic(),
      space={'l1_reg': (-1.0,)},
      workdir=tmp_path / 'refused',
      model=LINEAR,
      **SETTINGS,
    )
  assert not (tmp_path / 'refused').exists()


def test_one_model_of_its_own_trains_alone_with_the_train_workdirs_files(tmp_path):
  """`api.train` (what `--mode=train` calls) on a model with no `predict`:
  the train workdir's files, its own params, accuracies by its `accuracy`."""
  from configs import default
  from mlp import data, loop, workdir
  from tests.test_models import LINEAR

  config = default.get_config()
  config.update(
    batch_size=16, num_iters=40, eval_every=20, train_eval_size=40, write_plots=False
  )
  config.l1_reg = 1e-3  # the model's own hyperparameter, set in the config
  arrays = synthetic()
  dataset = data.from_arrays(*(arrays[i : i + 2] for i in (0, 2, 4)))
  summary = api.train(config, dataset, tmp_path, model=LINEAR)
  assert summary['steps'] == 40 and summary['num_params'] == 12 * 3 + 3
  params = workdir.load_params(tmp_path / 'params.npz')
  assert set(params) == {'w', 'b'}
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(line)['step'] for line in lines] == [20, 40]
  static = loop.static_for([config], dataset, model=LINEAR)
  test = LINEAR.accuracy(params, dataset.test_images, dataset.test_labels, static)
  assert summary['test_accuracy'] == pytest.approx(float(test), abs=1e-6)
