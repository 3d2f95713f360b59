"""Training options: optimizers, He init, epoch permutation, cosine, dropout, smoothing."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp import model, train
from tests.test_train import STATIC, hparams, stack, train_jit


def static(**changes) -> train.Static:
  return dataclasses.replace(STATIC, **changes)


@pytest.mark.parametrize(
  'optimizer, learning_rate',
  [('momentum', 0.1), ('nesterov', 0.1), ('adam', 0.02), ('adamw', 0.02)],
)
def test_each_optimizer_learns(data, optimizer, learning_rate):
  _, history = train_jit(
    hparams(learning_rate=learning_rate, weight_decay=1e-2),
    data,
    static=static(optimizer=optimizer, init='he'),
  )
  assert history['train_loss'][-1] < 0.7 * history['train_loss'][0]
  assert history['val_accuracy'][-1] > 0.6


def test_options_vmap_like_separate_runs(data):
  """Momentum, dropout, smoothing and warm-up as arrays: one program, many models."""
  options = static(
    optimizer='nesterov',
    lr_schedule='cosine',
    sampling='permutation',
    use_dropout=True,
    use_label_smoothing=True,
  )
  settings = [
    hparams(learning_rate=0.1, momentum=0.5, dropout=0.0, label_smoothing=0.0),
    hparams(
      learning_rate=0.2,
      momentum=0.9,
      dropout=0.3,
      label_smoothing=0.1,
      warmup_iters=10,
      seed=4,
    ),
  ]
  vmapped = jax.jit(jax.vmap(train.train, in_axes=(0, None, None)), static_argnums=2)
  params, history = vmapped(stack(*settings), data, options)
  for i, hp in enumerate(settings):
    alone, alone_history = train_jit(hp, data, static=options)
    np.testing.assert_allclose(params['W1'][i], alone['W1'], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(
      history['val_accuracy'][i], alone_history['val_accuracy']
    )


def test_he_init_scale():
  params = model.init_params(jax.random.key(0), 784, 400, 10, 1e-4, init='he')
  assert float(jnp.std(params['W1'])) == pytest.approx(np.sqrt(2 / 784), rel=0.02)
  assert float(jnp.std(params['W2'])) == pytest.approx(np.sqrt(2 / 400), rel=0.1)


def test_epoch_permutation_visits_every_image_once():
  options = static(sampling='permutation')  # 96 images, batch 16: 6 steps an epoch
  order = jnp.zeros((96,), jnp.int32)
  seen = []
  for step in range(12):
    order, idx = train.permutation_batch(np.int32(3), jnp.int32(step), order, options)
    seen.append(np.asarray(idx))
  first, second = np.concatenate(seen[:6]), np.concatenate(seen[6:])
  assert sorted(first) == list(range(96)) and sorted(second) == list(range(96))
  assert not np.array_equal(first, second)  # a new order each epoch


def test_cosine_schedule_with_warmup():
  options = static(lr_schedule='cosine')
  hp = hparams(learning_rate=1.0, num_iters=110, warmup_iters=10)
  rate = lambda s: float(train.learning_rate_at(hp, jnp.int32(s), options))  # noqa: E731
  assert rate(0) == pytest.approx(0.1) and rate(9) == pytest.approx(1.0)
  assert rate(60) == pytest.approx(0.5, abs=1e-6) and rate(110) == pytest.approx(
    0.0, abs=1e-7
  )
  assert all(rate(s) >= rate(s + 5) for s in range(10, 105, 5))


def test_dropout_zeroes_and_rescales_hidden_units():
  params = {'W1': jnp.eye(4), 'b1': jnp.zeros(4), 'W2': jnp.eye(4), 'b2': jnp.zeros(4)}
  x = jnp.ones((2000, 4))
  plain = model.apply(params, x)
  np.testing.assert_array_equal(model.apply(params, x, 0.0, jax.random.key(0)), plain)
  dropped = np.asarray(model.apply(params, x, 0.25, jax.random.key(0)))
  assert set(np.unique(dropped)) == {0.0, np.float32(1 / 0.75)}
  assert np.mean(dropped == 0) == pytest.approx(0.25, abs=0.02)


def test_label_smoothing_matches_numpy():
  logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
  labels = np.array([0, 1])
  eps = 0.1
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  target = np.full((2, 3), eps / 3)
  target[np.arange(2), labels] += 1 - eps
  expected = -np.mean(np.sum(target * log_p, axis=1))
  got = model.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), eps)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  assert float(model.cross_entropy(logits, labels, 0.0)) == pytest.approx(
    float(model.cross_entropy(logits, labels)), rel=1e-6
  )


def test_training_with_augmentation_is_deterministic_and_differs(mnist):
  from mlp import augment

  images, labels = mnist.train_images[:2000], mnist.train_labels[:2000]
  small = train.DeviceData(
    jnp.asarray(images),
    jnp.asarray(labels),
    jnp.asarray(images[:500]),
    jnp.asarray(labels[:500]),
  )
  plain = static(
    input_size=784,
    num_classes=10,
    hidden_size=16,
    batch_size=32,
    num_train=2000,
    max_iters=20,
    eval_every=20,
    train_eval_size=100,
  )
  distorted = dataclasses.replace(
    plain, augment=augment.AugmentConfig(rotation_degrees=10, elastic_alpha=34.0)
  )
  hp = hparams(num_iters=20, learning_rate=0.1)
  first, history = train_jit(hp, small, static=distorted)
  second, _ = train_jit(hp, small, static=distorted)
  unaugmented, _ = train_jit(hp, small, static=plain)
  np.testing.assert_array_equal(first['W1'], second['W1'])
  assert not np.allclose(first['W1'], unaugmented['W1'])
  assert np.isfinite(history['train_loss']).all()
