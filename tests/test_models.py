"""Any model through the engine: the `Model` form, its own hyperparameters,
its checks on abstract values, a user's arrays, and the fast paths kept to
the MLP."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mlp import data as data_lib
from mlp import evaluation, hparams, loop, model, models, resources, step
from mlp.errors import UserError
from mlp.step import blocked, core, tall
from tests.conftest import STATIC, make_hparams

# The MLP's own functions in another `Model`: the engine must treat it as any
# model, so no fast path may take it.
COPY = dataclasses.replace(models.MLP, name='copy')

L1 = hparams.Field('l1_reg', float, 0.0, 0.0, doc='lambda of an L1 penalty')


def _linear_init(key, hp, static):
  w = 0.1 * jax.random.normal(key, (static.input_size, static.num_classes))
  return {'w': w, 'b': jnp.zeros((static.num_classes,))}


def _linear_loss(params, x, labels, hp, static, key):
  logits = x.reshape(x.shape[0], -1) @ params['w'] + params['b']
  l1 = hp.extra['l1_reg'] * jnp.sum(jnp.abs(params['w']))
  return model.cross_entropy(logits, labels) + l1


def _linear_accuracy(params, x, labels, static):
  logits = x.reshape(x.shape[0], -1) @ params['w'] + params['b']
  return jnp.mean(jnp.argmax(logits, -1) == labels)


LINEAR = models.Model(
  'linear', _linear_init, _linear_loss, _linear_accuracy, hyperparams=(L1,)
)


def test_no_fast_path_takes_another_model():
  axes = hparams.stack([make_hparams(learning_rate=v) for v in (0.1, 0.2)])[1]
  assert step.choose(STATIC, axes) is tall and step.choose(STATIC, None) is blocked
  for other in (COPY, LINEAR):
    program = dataclasses.replace(STATIC, model=other)
    for path in (tall, blocked):
      assert not path.SUPPORTS.covers(program, axes)
      assert not path.SUPPORTS.covers(program, None)
    assert step.choose(program, axes) is core and step.choose(program, None) is core
  # A path that names no model covers none: a new one must declare the MLP.
  undeclared = dataclasses.replace(blocked.SUPPORTS, models=())
  assert not undeclared.covers(STATIC, None)


def test_a_models_own_hyperparameter_is_per_model_and_never_recompiles(data):
  program = dataclasses.replace(STATIC, model=LINEAR)
  members = [
    hparams.make(extra=LINEAR.hyperparams, learning_rate=0.5, l1_reg=value)
    for value in (0.0, 0.05)
  ]
  values, axes = hparams.stack(members)
  assert axes.extra['l1_reg'] == 0 and axes.learning_rate is None
  train = jax.jit(
    jax.vmap(
      chex.assert_max_traces(loop.train, n=1),
      in_axes=(axes, None, None),
    ),
    static_argnums=2,
  )
  params, history = train(values, data, program)
  assert history['val_accuracy'].shape == (2, STATIC.num_segments)
  assert history['val_accuracy'][0, -1] > 0.6  # it learns
  # The L1 penalty shrinks the weights of the member that has it.
  norms = np.abs(np.asarray(params['w'])).sum(axis=(1, 2))
  assert norms[1] < 0.8 * norms[0]
  # Other values of it reuse the program.
  other = hparams.stack(
    [hparams.make(extra=LINEAR.hyperparams, l1_reg=v) for v in (0.01, 0.02)]
  )[0]
  train(other, data, program)
  # The vmapped member equals its run alone.
  alone, _ = jax.jit(loop.train, static_argnames='static')(
    members[0], data, static=program
  )
  np.testing.assert_allclose(params['w'][0], alone['w'], rtol=1e-5, atol=1e-6)


def test_a_models_own_hyperparameters_are_declared_like_the_tables():
  made = hparams.make(extra=(L1,), l1_reg=0.3)
  assert float(made.extra['l1_reg']) == pytest.approx(0.3)
  assert hparams.names_of(made) == (*hparams.NAMES, 'l1_reg')
  config = {f.name: f.default for f in (*hparams.FIELDS.values(),)}
  config |= {c.name: c.default for c in (*hparams.CHOICES, hparams.DATA_SOURCE)}
  config |= {n: default.get_config()[n] for n in hparams.UNCHECKED}  # data, plots
  hparams.validate(config, extra=(L1,))  # absent: its default
  with pytest.raises(UserError, match=r'l1_reg=-1.*>= 0'):
    hparams.validate({**config, 'l1_reg': -1.0}, extra=(L1,))
  of = hparams.of_config({**config, 'l1_reg': 0.25}, extra=(L1,))
  assert of.extra['l1_reg'].dtype == np.float32 and of.learning_rate == 0.1
  assert hparams.varying([made, hparams.make(extra=(L1,))]) == ('l1_reg',)
  for taken in ('learning_rate', 'hidden_size', 'optimizer', 'extra'):
    with pytest.raises(ValueError, match='taken'):
      models.Model(
        'bad',
        _linear_init,
        _linear_loss,
        _linear_accuracy,
        (),
        (hparams.Field(taken, float, 0.0, 0.0),),
      )
  with pytest.raises(ValueError, match='default'):
    hparams.check_extra((hparams.Field('width', int, 0, 1),))


def _members(*statics):
  return [(hparams.make(extra=LINEAR.hyperparams), s) for s in statics]


def test_check_passes_a_good_model_and_names_each_problem():
  models.check(LINEAR, _members(STATIC, STATIC), (12,))
  models.check(models.MLP, [(make_hparams(), STATIC)], (12,))

  def per_example_loss(params, x, labels, hp, static, key):
    return _linear_loss(params, x, labels, hp, static, key) * jnp.ones(len(labels))

  def python_width(key, hp, static):
    return {'w': jnp.zeros((int(hp.learning_rate * 10), static.num_classes))}

  def keys_by_size(key, hp, static):
    return {'w' if static.hidden_size > 4 else 'v': jnp.zeros((static.hidden_size,))}

  def integer_accuracy(params, x, labels, static):
    return jnp.sum(labels)

  small = dataclasses.replace(STATIC, hidden_size=4)
  for change, members, message in (
    (
      {'loss': per_example_loss},
      _members(STATIC),
      r'loss must return one float '
      r'scalar, got float32\[16\].*jnp.mean',
    ),
    ({'init': python_width}, _members(STATIC), 'init reads a hyperparameter'),
    ({'init': keys_by_size}, _members(STATIC, small), 'another structure for member 1'),
    (
      {'accuracy': integer_accuracy},
      _members(STATIC),
      'accuracy must return one float',
    ),
    ({'loss': lambda *a: 1 / 0}, _members(STATIC), 'loss fails.*ZeroDivisionError'),
  ):
    bad = dataclasses.replace(LINEAR, **change)
    with pytest.raises(UserError, match=message):
      models.check(bad, members, (12,))


def test_user_arrays_are_checked_and_float_inputs_kept():
  rng = np.random.default_rng(0)
  x = rng.random((20, 4, 4, 1))  # float64: becomes float32
  y = rng.integers(0, 3, 20)
  dataset = data_lib.from_arrays((x, y), (x[:5], y[:5]), (x[:6], y[:6]))
  assert dataset.train_images.dtype == np.float32 and dataset.num_classes == 3
  assert dataset.image_shape == (4, 4, 1) and dataset.train_labels.dtype == np.int32
  np.testing.assert_array_equal(
    data_lib.scale_images(dataset.val_images), x[:5].astype(np.float32)
  )
  for train, message in (
    ((x, y[:19]), '20 inputs but 19 labels'),
    ((x, np.eye(3)[y]), 'integer class indices of shape \\(20,\\), not one-hot'),
    ((x.astype(np.int64), y), 'inputs are int64'),
    ((x[:, :2], y), 'inputs of different shapes'),
    ((x, y - 1), 'outside the 3 classes'),
  ):
    with pytest.raises(UserError, match=message):
      data_lib.from_arrays(train, (x[:5], y[:5]), (x[:6], y[:6]), num_classes=3)


def test_a_model_without_predict_is_scored_by_its_accuracy(data, monkeypatch):
  params = model.init_params(jax.random.key(1), 12, 8, 3, 0.5)
  images, labels = (
    np.asarray(data.train_images[:90]),
    np.asarray(data.train_labels[:90]),
  )
  exact = evaluation.split_accuracy(params, images, labels)  # by predict
  monkeypatch.setattr(evaluation, 'CHUNK', 40)  # two pieces and the rest
  without = dataclasses.replace(models.MLP, predict=None)
  assert evaluation.split_accuracy(params, images, labels, without, STATIC) == exact
  assert 0 < exact < 1 and exact * 90 == round(exact * 90)


def test_memory_of_another_model_counts_its_params_from_shapes():
  copy = resources.estimate(dataclasses.replace(STATIC, model=COPY), 32)
  mlp = resources.estimate(STATIC, 32)
  assert copy.params == mlp.params and copy.shared == mlp.shared
  assert models.param_count(LINEAR, STATIC) == 12 * 3 + 3
