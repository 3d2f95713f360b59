"""The model's math against independent NumPy references (cs231n's toy model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp import model
from tests.conftest import CompileCounter

# Jitted, so each test compiles one program instead of one per operation.
init_params = jax.jit(model.init_params, static_argnums=(1, 2, 3, 5))
loss = jax.jit(model.loss)

# cs231n's toy problem: 4 inputs, 10 hidden units, 3 classes, 5 examples.
D, H, C, N = 4, 10, 3, 5


def toy_problem(dtype=np.float64):
  rng = np.random.default_rng(0)
  params = {
    'W1': 1e-1 * rng.standard_normal((D, H)),
    'b1': 1e-1 * rng.standard_normal(H),
    'W2': 1e-1 * rng.standard_normal((H, C)),
    'b2': 1e-1 * rng.standard_normal(C),
  }
  x = 10 * rng.standard_normal((N, D))
  y = np.array([0, 1, 2, 2, 1])
  return {k: v.astype(dtype) for k, v in params.items()}, x.astype(dtype), y


def numpy_forward_backward(params, x, y, reg):
  """The course's formulas, written out by hand in NumPy (float64)."""
  z1 = x @ params['W1'] + params['b1']
  a1 = np.maximum(z1, 0)
  scores = a1 @ params['W2'] + params['b2']
  shifted = scores - scores.max(axis=1, keepdims=True)
  probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
  data_loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
  loss = data_loss + 0.5 * reg * (np.sum(params['W1'] ** 2) + np.sum(params['W2'] ** 2))
  dscores = probs.copy()
  dscores[np.arange(len(y)), y] -= 1
  dscores /= len(y)
  da1 = dscores @ params['W2'].T
  dz1 = da1 * (z1 > 0)
  grads = {
    'W2': a1.T @ dscores + reg * params['W2'],
    'b2': dscores.sum(axis=0),
    'W1': x.T @ dz1 + reg * params['W1'],
    'b1': dz1.sum(axis=0),
  }
  return loss, grads, scores


def test_shapes_and_parameter_count():
  params = init_params(jax.random.key(0), 784, 300, 10, 1e-4)
  assert {k: v.shape for k, v in params.items()} == {
    'W1': (784, 300),
    'b1': (300,),
    'W2': (300, 10),
    'b2': (10,),
  }
  assert model.num_params(params) == 784 * 300 + 300 + 300 * 10 + 10 == 238_510
  assert model.apply(params, jnp.zeros((7, 784))).shape == (7, 10)
  np.testing.assert_array_equal(params['b1'], 0)
  assert abs(float(jnp.std(params['W1'])) - 1e-4) < 1e-5


@pytest.mark.parametrize('reg', [0.0, 0.05, 0.1])
def test_toy_loss_and_scores_match_numpy(reg):
  params, x, y = toy_problem(np.float32)
  expected_loss, _, expected_scores = numpy_forward_backward(
    {k: v.astype(np.float64) for k, v in params.items()}, x.astype(np.float64), y, reg
  )
  np.testing.assert_allclose(
    model.apply(params, x), expected_scores, rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(model.loss(params, x, y, reg), expected_loss, rtol=1e-5)


def test_penalty_is_added_with_half_lambda():
  params, x, y = toy_problem(np.float32)
  base = model.loss(params, x, y, 0.0)
  penalty = np.sum(params['W1'] ** 2) + np.sum(params['W2'] ** 2)
  np.testing.assert_allclose(
    model.loss(params, x, y, 0.3) - base, 0.15 * penalty, rtol=1e-5
  )


def test_grad_matches_hand_derived_backprop():
  params, x, y = toy_problem(np.float32)
  _, expected, _ = numpy_forward_backward(
    {k: v.astype(np.float64) for k, v in params.items()}, x.astype(np.float64), y, 0.05
  )
  grads = jax.grad(model.loss)(params, x, y, 0.05)
  for name in params:
    np.testing.assert_allclose(
      grads[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name
    )


def test_grad_matches_finite_differences():
  with jax.enable_x64(True):
    params, x, y = toy_problem(np.float64)
    params = jax.tree.map(jnp.asarray, params)
    loss_fn = jax.jit(lambda p: model.loss(p, x, y, 0.05))
    grads = jax.grad(loss_fn)(params)
    eps = 1e-6
    for name, value in params.items():
      flat = np.asarray(value).ravel()
      numeric = np.empty_like(flat)
      for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = eps
        plus = {**params, name: (flat + step).reshape(value.shape)}
        minus = {**params, name: (flat - step).reshape(value.shape)}
        numeric[i] = (loss_fn(plus) - loss_fn(minus)) / (2 * eps)
      np.testing.assert_allclose(
        np.asarray(grads[name]).ravel(), numeric, rtol=1e-6, atol=1e-8, err_msg=name
      )


def test_loss_is_ln10_at_tiny_init():
  # H 300: the init program of test_shapes_and_parameter_count, compiled once.
  params = init_params(jax.random.key(1), 784, 300, 10, 1e-4)
  x = jax.random.uniform(jax.random.key(2), (64, 784))
  y = jnp.arange(64) % 10
  np.testing.assert_allclose(loss(params, x, y, 1e-3), np.log(10), rtol=1e-4)


def test_loss_is_stable_for_huge_logits():
  params, x, y = toy_problem(np.float32)
  params = {**params, 'W2': params['W2'] * 1e6}
  assert np.isfinite(model.loss(params, x, y, 0.0))


def test_accuracy():
  params = {'W1': jnp.eye(3), 'b1': jnp.zeros(3), 'W2': jnp.eye(3), 'b2': jnp.zeros(3)}
  x = jnp.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [0, 0, 1.0]])
  assert float(model.accuracy(params, x, jnp.array([0, 1, 2, 0]))) == 0.75


def test_split_accuracy_counts_every_example_once():
  from mlp import evaluation

  rng = np.random.default_rng(0)
  n = 2 * evaluation.CHUNK + 1234  # two whole chunks and a padded one
  images = rng.integers(0, 256, (n, 12)).astype(np.uint8)
  params = jax.device_get(model.init_params(jax.random.key(1), 12, 8, 3, 0.5))
  x = images / np.float32(255.0)
  scores = np.maximum(x @ params['W1'] + params['b1'], 0) @ params['W2'] + params['b2']
  labels = rng.integers(0, 3, n).astype(np.int32)
  expected = np.mean(np.argmax(scores, 1) == labels)
  assert 0.2 < expected < 0.5
  assert evaluation.split_accuracy(params, images, labels) == pytest.approx(
    expected, abs=1e-9
  )


def test_evaluate_is_one_program_for_every_split_compiled_once():
  from mlp import evaluation

  rng = np.random.default_rng(1)
  sizes = {'train': evaluation.CHUNK + 321, 'val': 77, 'test': evaluation.CHUNK}
  splits = {
    name: (
      rng.integers(0, 256, (n, 12)).astype(np.uint8),
      rng.integers(0, 3, n).astype(np.int32),
    )
    for name, n in sizes.items()
  }
  params = jax.device_get(model.init_params(jax.random.key(2), 12, 8, 3, 0.5))
  with CompileCounter() as first:
    result = evaluation.evaluate(params, splits)
  # One program for the three splits: traced, lowered and compiled once.
  assert first.lowerings() == 1
  for name, (images, labels) in splits.items():
    x = images / np.float32(255.0)
    hidden = np.maximum(x @ params['W1'] + params['b1'], 0)
    expected = np.argmax(hidden @ params['W2'] + params['b2'], 1)
    np.testing.assert_array_equal(result.predictions(name), expected)
    assert result.accuracy(name) == np.sum(expected == labels) / len(labels)
  # The same shapes again (as at the end of a run, whose program was compiled
  # beside its training program): nothing is traced, lowered or compiled.
  other = {**params, 'W1': params['W1'] + 1}
  with CompileCounter() as again:
    evaluation.evaluate(other, splits).accuracy('train')
  assert again.events == []
