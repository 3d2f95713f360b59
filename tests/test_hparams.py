"""The hyperparameter table: what derives from it, and the checks it drives."""

import ml_collections
import numpy as np
import pytest

from configs import default, sweep
from mlp import hparams
from mlp.errors import UserError
from mlp.search import space


def test_every_declared_field_has_its_default_in_configs_default():
  config = default.get_config()
  for field in (*hparams.PER_MODEL, *hparams.SHAPES, *hparams.SETTINGS):
    assert field.name in config, field.name
    field.check(config[field.name])  # the default config is valid
  for choice in hparams.CHOICES:
    assert config[choice.name] == choice.default, choice.name


def test_hyperparams_and_the_sweeps_fields_derive_from_the_table():
  assert hparams.Hyperparams._fields == (*hparams.NAMES, 'extra')
  assert tuple(f.name for f in hparams.PER_MODEL) == hparams.NAMES
  assert set(sweep.get_config().sweep) == set(hparams.SWEEPABLE)
  assert {'seed', 'num_iters', 'warmup_iters', 'hidden_size', 'batch_size'} == set(
    hparams.INTEGER
  )
  one = hparams.of_config(default.get_config())
  assert one.learning_rate.dtype == np.float32 and one.seed.dtype == np.int32
  assert float(one.grad_clip_norm) == 0.0


def test_make_takes_defaults_and_refuses_unknown_names():
  made = hparams.make(learning_rate=0.3)
  assert float(made.learning_rate) == pytest.approx(0.3)
  assert float(made.lr_decay) == pytest.approx(hparams.FIELDS['lr_decay'].default)
  with pytest.raises(TypeError, match='lerning_rate'):
    hparams.make(lerning_rate=0.3)


def test_stack_batches_only_the_fields_that_differ():
  models = [hparams.make(learning_rate=v, seed=0) for v in (0.1, 0.2, 0.3)]
  values, axes = hparams.stack(models)
  assert axes.learning_rate == 0 and axes.seed is None and axes.l2_reg is None
  np.testing.assert_allclose(values.learning_rate, [0.1, 0.2, 0.3])
  _, same = hparams.stack([hparams.make()] * 2)
  assert [name for name in hparams.NAMES if getattr(same, name) is not None] == [
    'learning_rate'
  ]  # vmap needs one batched input


def test_options_on_are_the_fields_away_from_off_that_apply():
  plain = default.get_config()
  dropout = default.get_config()
  dropout.dropout = 0.5
  assert hparams.options_on([plain]) == frozenset()
  assert hparams.options_on([plain, dropout]) == {'dropout'}
  warm = default.get_config()
  warm.warmup_iters = 10  # read only by the cosine schedule
  assert hparams.options_on([warm]) == frozenset()
  warm.lr_schedule = 'cosine'
  assert hparams.options_on([warm]) == {'warmup_iters'}


@pytest.mark.parametrize(
  'field, value, expected',
  [
    ('hidden_size', 0, 'an integer >= 1'),
    ('hidden_size', 2.5, 'an integer'),
    ('learning_rate', 0.0, 'a finite number > 0'),
    ('learning_rate', float('inf'), 'a finite number > 0'),
    ('lr_decay', 1.5, '> 0 and <= 1'),
    ('momentum', 1.0, 'between 0 and 0.99'),
    ('grad_clip_norm', -1.0, '>= 0'),
    ('augment_scale', 1.0, '< 1'),
    ('seed', True, 'an integer'),
    ('optimizer', 'adagrad', 'one of sgd, momentum'),
    ('data_source', 'csv', 'one of idx, tfds'),
  ],
)
def test_validation_names_the_field_the_value_and_what_is_accepted(
  field, value, expected
):
  config = default.get_config().to_dict()
  config[field] = value
  with pytest.raises(UserError) as error:
    hparams.validate(config)
  message = str(error.value)
  assert f'{field}={value!r}' in message and expected in message
  assert f'--config.{field}=VALUE' in message and '\n' not in message


def test_batch_size_is_checked_against_the_training_split():
  config = default.get_config()
  hparams.validate(config, num_train=200)
  with pytest.raises(UserError, match='at most the 199 training images'):
    hparams.validate(config, num_train=199)


def test_a_swept_value_is_checked_like_a_config_value():
  config = sweep.get_config()
  config.sweep.grad_clip_norm = (1.0, -2.0)
  with pytest.raises(UserError, match=r'config.sweep.grad_clip_norm holds -2\.0.*>= 0'):
    space.points(config)
  config.sweep.grad_clip_norm = (0.0, 1.0)
  assert len(space.points(config)) == 2 * 36


def test_a_field_outside_the_table_cannot_be_swept():
  config = sweep.get_config()
  config.sweep.optimizer = ('sgd',)
  with pytest.raises(UserError, match='cannot be swept'):
    space.points(config)


def test_grid_is_the_cartesian_product_and_a_log_range_is_log_uniform():
  config = sweep.get_config()
  config.sweep.hidden_size = (8, 16)
  config.sweep.learning_rate = (0.1, 0.2, 0.3)
  config.sweep.l2_reg = ()
  points = space.points(config)
  assert {(p['hidden_size'], p['learning_rate']) for p in points} == {
    (h, lr) for h in (8, 16) for lr in (0.1, 0.2, 0.3)
  }
  assert len(points) == 6
  config.sweep.learning_rate = space.log_uniform(1e-4, 1.0)
  config.search = 'random'
  config.num_samples = 400
  points = space.points(config)
  rates = np.array([p['learning_rate'] for p in points])
  assert len(points) == 400 and rates.min() >= 1e-4 and rates.max() <= 1.0
  share = np.mean((rates >= 1e-2) & (rates < 1e-1))  # a quarter per decade
  assert 0.18 < share < 0.32
  assert {p['hidden_size'] for p in points} == {8, 16}


def test_every_kind_of_space_is_drawn_from_and_a_grid_needs_values():
  config = sweep.get_config()
  config.search, config.num_samples = 'random', 300
  config.sweep.hidden_size = space.integers(8, 10)
  config.sweep.learning_rate = (0.1, 0.3)  # values: drawn among them
  config.sweep.l2_reg = space.uniform(0.0, 1e-3)
  config.sweep.lr_decay = ('log', 0.9, 1.0)  # the same, as a config file spells it
  points = space.points(config)
  assert {p['hidden_size'] for p in points} == {8, 9, 10}
  assert all(isinstance(p['hidden_size'], int) for p in points)
  assert {p['learning_rate'] for p in points} == {0.1, 0.3}
  l2 = np.array([p['l2_reg'] for p in points])
  assert l2.min() >= 0 and l2.max() <= 1e-3 and 0.35 < np.mean(l2 < 5e-4) < 0.65
  config.search = 'grid'
  with pytest.raises(
    UserError, match=r'hidden_size=.*is a range, and a grid needs values'
  ):
    space.points(config)


@pytest.mark.parametrize(
  'field, value, expected',
  [
    ('learning_rate', ('log', 0.0, 1.0), "kind 'log' \\(low > 0\\) or 'linear'"),
    ('learning_rate', ('linear', 1.0, 0.5), 'low <= high'),
    ('learning_rate', ('int', 1, 5), 'is not a range of learning_rate'),
    ('hidden_size', ('log', 8, 64), "kind 'int'"),
    ('hidden_size', ('int', 8), 'expected \\(kind, low, high\\)'),
    ('learning_rate', ('logx', 1.0), "holds 'logx'"),
  ],
)
def test_a_bad_range_names_the_field_and_the_spelling(field, value, expected):
  config = sweep.get_config()
  config.search, config.num_samples = 'random', 2
  config.sweep[field] = value
  with pytest.raises(UserError, match=expected):
    space.points(config)


def test_model_config_gives_integer_fields_integers():
  config = sweep.get_config()
  single = space.model_config(config, {'hidden_size': np.int64(64), 'l2_reg': 1})
  assert type(single.hidden_size) is int and type(single.l2_reg) is float
  assert isinstance(single, ml_collections.ConfigDict)


def test_in_effect_lists_what_the_choices_read_and_the_options_on():
  from configs import best_augmented, default

  plain = default.get_config()
  assert hparams.in_effect([plain]) == (
    'hidden_size',
    'batch_size',
    'learning_rate',
    'lr_decay',
    'l2_reg',
    'init_std',
    'seed',
    'num_iters',
    *(c.name for c in hparams.CHOICES),
  )
  augmented = hparams.in_effect([best_augmented.get_config()])
  assert {'warmup_iters', 'elastic_alpha', 'elastic_sigma'} <= set(augmented)
  assert {'lr_decay', 'init_std', 'augment_shear', 'dropout'}.isdisjoint(augmented)
  dropout = default.get_config()
  dropout.dropout = 0.5
  assert 'dropout' in hparams.in_effect([plain, dropout])  # on in any model
