"""The training step: the core against the math, the fast paths against the core."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp import hparams, model, step
from mlp.step import blocked, core, tall, xla_options
from tests.conftest import STATIC, make_hparams, stack


def static(**changes) -> core.Static:
  return dataclasses.replace(STATIC, **changes)


def test_step_is_sgd_on_model_loss(data):
  """One core step: params - lr * grad(model.loss), loss at the old params."""
  hp = make_hparams(learning_rate=0.3, l2_reg=0.01)
  state = core.init_state(hp, STATIC)
  new_state, metrics = jax.jit(core.train_step, static_argnames='static')(
    state, hp, data, static=STATIC
  )
  idx = core.draw(hp.seed, jnp.int32(0), STATIC).indices
  x = data.train_images[idx] / np.float32(255)
  loss, grads = jax.value_and_grad(model.loss)(
    state.params, x, data.train_labels[idx], 0.01
  )
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-6)
  for name in grads:
    np.testing.assert_allclose(
      new_state.params[name], state.params[name] - 0.3 * grads[name], rtol=1e-5
    )
  assert int(new_state.step) == 1 and bool(metrics['active'])


def test_batches_are_drawn_with_replacement_and_shared_by_seed():
  big = static(batch_size=4096, num_train=50)

  def indices(seed, step):
    return np.asarray(core.draw(np.int32(seed), jnp.int32(step), big).indices)

  idx = indices(0, 7)
  assert idx.min() >= 0 and idx.max() < 50
  assert len(np.unique(idx)) == 50  # every index drawn, so many repeats
  np.testing.assert_array_equal(idx, indices(0, 7))
  assert not np.array_equal(idx, indices(0, 8))
  assert not np.array_equal(idx, indices(1, 7))


def test_learning_rate_decays_once_per_epoch():
  hp = make_hparams(learning_rate=1.0, lr_decay=0.5)  # 6 steps an epoch
  rates = [
    float(core.learning_rate_at(hp, jnp.int32(s), STATIC)) for s in (0, 5, 6, 11, 12)
  ]
  assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]
  assert static(batch_size=200, num_train=50).iters_per_epoch == 1


def test_cosine_schedule_with_warmup():
  options = static(lr_schedule='cosine')
  hp = make_hparams(learning_rate=1.0, num_iters=110, warmup_iters=10)

  def rate(s):
    return float(core.learning_rate_at(hp, jnp.int32(s), options))

  assert rate(0) == pytest.approx(0.1) and rate(9) == pytest.approx(1.0)
  assert rate(60) == pytest.approx(0.5, abs=1e-6)
  assert rate(110) == pytest.approx(0.0, abs=1e-7)
  assert all(rate(s) >= rate(s + 5) for s in range(10, 105, 5))


def test_epoch_permutation_visits_every_image_once():
  options = static(sampling='permutation')  # 96 images, batch 16: 6 steps an epoch
  order = jnp.zeros((96,), jnp.int32)
  seen = []
  for t in range(12):
    order, idx = core.permutation_batch(np.int32(3), jnp.int32(t), order, options)
    seen.append(np.asarray(idx))
  first, second = np.concatenate(seen[:6]), np.concatenate(seen[6:])
  assert sorted(first) == list(range(96)) and sorted(second) == list(range(96))
  assert not np.array_equal(first, second)  # a new order each epoch


def test_grad_clip_norm_caps_the_global_norm():
  grads = {'W1': jnp.full((2, 2), 3.0), 'b1': jnp.full((2,), 4.0)}
  clipped = core.clip_by_global_norm(grads, jnp.float32(1.0))
  assert float(jnp.sqrt(sum(jnp.sum(g**2) for g in clipped.values()))) == (
    pytest.approx(1.0, rel=1e-6)
  )
  np.testing.assert_allclose(clipped['W1'] / clipped['b1'][0], 0.75, rtol=1e-6)
  for max_norm in (0.0, 100.0):  # off, and a norm already below the cap
    unchanged = core.clip_by_global_norm(grads, jnp.float32(max_norm))
    np.testing.assert_array_equal(unchanged['W1'], grads['W1'])


def test_grad_clip_norm_trains_and_changes_the_steps(data):
  """Clipping is compiled in only when some model uses it, and then bites."""
  clipping = static(options=frozenset({'grad_clip_norm'}))
  run = jax.jit(core.run_steps, static_argnames='static')
  plain_state = core.init_state(make_hparams(), STATIC)
  plain, loss_plain, _ = run(plain_state, make_hparams(), data, STATIC, jnp.int32(40))
  hp = make_hparams(grad_clip_norm=0.05)
  state = core.init_state(hp, clipping)
  clipped, loss_clipped, count = run(state, hp, data, clipping, jnp.int32(40))
  assert int(count) == 40 and np.isfinite(float(loss_clipped))
  step_norm = np.linalg.norm(np.asarray(clipped.params['W2'] - state.params['W2']))
  plain_norm = np.linalg.norm(np.asarray(plain.params['W2'] - state.params['W2']))
  assert step_norm < plain_norm
  assert step_norm <= 40 * 0.5 * 0.05 * 1.0001  # steps x lr x clipped norm


# The fast paths against the core. Each runs the same two segments: 0-70
# (random-input blocks cross) and 70-80 (starts in the middle of a block).
LONG = static(max_iters=80, eval_every=70)


def _two_segments(path, hp, data, options, hparam_axes=None):
  run = jax.jit(path.run_steps, static_argnames=('static', 'hparam_axes'))
  if hparam_axes is None:
    state = core.init_state(hp, options)
  else:
    init = jax.vmap(
      lambda h: core.init_state(h, options),
      in_axes=(hparam_axes,),
      out_axes=core.STATE_AXES,
    )
    state = init(hp)
  losses = []
  for end in (70, 80):
    state, loss_sum, count = run(
      state, hp, data, options, jnp.int32(end), hparam_axes=hparam_axes
    )
    count = np.asarray(count)  # a model past its num_iters has none
    losses.append(np.where(count > 0, np.asarray(loss_sum) / np.maximum(count, 1), 0))
  return state, losses


def assert_states_close(a, b, rtol=1e-5, atol=1e-6):
  for name in a.params:
    np.testing.assert_allclose(a.params[name], b.params[name], rtol=rtol, atol=atol)


def test_blocked_equals_the_core_for_one_model(data):
  hp = make_hparams(l2_reg=0.05, num_iters=80)
  fast, fast_losses = _two_segments(blocked, hp, data, LONG)
  slow, slow_losses = _two_segments(core, hp, data, LONG)
  assert_states_close(fast, slow)
  np.testing.assert_allclose(fast_losses, slow_losses, rtol=1e-5)


def test_blocked_equals_the_core_with_every_option_vmapped(data):
  options = static(
    max_iters=80,
    eval_every=70,
    optimizer='nesterov',
    lr_schedule='cosine',
    sampling='permutation',
    options=frozenset({'dropout', 'label_smoothing', 'grad_clip_norm', 'warmup_iters'}),
  )
  models = [
    make_hparams(learning_rate=0.1, momentum=0.5, num_iters=80, grad_clip_norm=0.5),
    make_hparams(
      learning_rate=0.2,
      momentum=0.9,
      dropout=0.3,
      label_smoothing=0.1,
      warmup_iters=10,
      seed=4,
      num_iters=60,
    ),
  ]
  hp = stack(*models)
  axes = hparams.Hyperparams(*[0] * len(hparams.NAMES))
  assert step.choose(options, axes) is blocked
  fast, fast_losses = _two_segments(blocked, hp, data, options, axes)
  slow, slow_losses = _two_segments(core, hp, data, options, axes)
  assert_states_close(fast, slow, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(fast_losses, slow_losses, rtol=1e-5)
  # Each model of the vmapped program equals its run alone: its own batches
  # (seed), epoch orders, dropout masks and options.
  for i, one in enumerate(models):
    alone, alone_losses = _two_segments(blocked, one, data, options)
    for name in alone.params:
      np.testing.assert_allclose(
        fast.params[name][i], alone.params[name], rtol=1e-4, atol=1e-5
      )
    np.testing.assert_allclose(np.array(fast_losses)[:, i], alone_losses, rtol=1e-5)


def _three_models(**varying):
  models = [
    make_hparams(**{k: v[i] for k, v in varying.items()}, num_iters=80)
    for i in range(3)
  ]
  return hparams.stack(models)


def test_tall_equals_the_core_vmapped(data):
  options = static(max_iters=80, eval_every=70, options=frozenset({'label_smoothing'}))
  hp, axes = _three_models(
    learning_rate=(0.1, 0.3, 0.5),
    l2_reg=(0.0, 1e-3, 1e-2),
    label_smoothing=(0.0, 0.1, 0.2),
  )
  assert step.choose(options, axes) is tall
  fast, fast_losses = _two_segments(tall, hp, data, options, axes)
  slow, slow_losses = _two_segments(core, hp, data, options, axes)
  assert_states_close(fast, slow)
  np.testing.assert_allclose(fast_losses, slow_losses, rtol=1e-5)


def test_tall_with_bfloat16_matmuls_tracks_the_core(data):
  # Both round the matmul inputs to bfloat16, in different orders of summation.
  options = static(max_iters=80, eval_every=70, compute_dtype='bfloat16')
  hp, axes = _three_models(learning_rate=(0.1, 0.3, 0.5), l2_reg=(0.0, 1e-3, 1e-2))
  fast, fast_losses = _two_segments(tall, hp, data, options, axes)
  slow, slow_losses = _two_segments(core, hp, data, options, axes)
  assert np.all(slow_losses[1] < 0.96 * slow_losses[0])  # bfloat16 matmuls train
  np.testing.assert_allclose(fast_losses, slow_losses, rtol=1e-2)
  for name in slow.params:
    scale = float(np.max(np.abs(slow.params[name])))
    np.testing.assert_allclose(fast.params[name], slow.params[name], atol=0.02 * scale)


def test_the_chooser_reads_each_paths_declaration():
  shared_seed = hparams.stack([make_hparams(learning_rate=v) for v in (0.1, 0.2)])[1]
  own_seed = hparams.stack([make_hparams(seed=s) for s in (0, 1)])[1]
  assert step.choose(STATIC, shared_seed) is tall
  assert step.choose(STATIC, None) is blocked  # one model
  assert step.choose(STATIC, own_seed) is blocked  # each model its own batches
  for change in (
    {'optimizer': 'momentum'},
    {'optimizer': 'adam'},
    {'sampling': 'permutation'},
    {'options': frozenset({'dropout'})},
    {'options': frozenset({'grad_clip_norm'})},
  ):
    assert step.choose(static(**change), shared_seed) is blocked, change


@pytest.mark.parametrize('path', [tall, blocked], ids=['tall', 'blocked'])
@pytest.mark.parametrize('field', [f for f in hparams.PER_MODEL if f.off is not None])
def test_an_option_a_path_does_not_declare_is_never_given_to_it(path, field):
  """A per-model option switched on: the path covers it only if it says so."""
  choices = {
    c.name: (path.SUPPORTS.choices.get(c.name) or (c.default,))[0]
    for c in hparams.CHOICES
  }
  if field.only_with:  # a choice under which the option is read
    name, values = field.only_with
    choices[name] = values[0]
  program = static(options=frozenset({field.name}), **choices)
  axes = hparams.stack([make_hparams(learning_rate=v) for v in (0.1, 0.2)])[1]
  covered = path.SUPPORTS.covers(program, axes)
  implemented = field.name in path.SUPPORTS.hyperparams
  choice_ok = not field.only_with or choices[field.only_with[0]] in (
    path.SUPPORTS.choices.get(field.only_with[0], ())
  )
  assert covered == (implemented and choice_ok)


def test_compiler_options_leave_out_what_xla_does_not_know(monkeypatch):
  # The pinned jaxlib knows every option the training loops ask for.
  assert xla_options.compiler_options('float32', many_models=True) == {
    **xla_options.CPU,
    **xla_options.CPU_FLOAT32,
    **xla_options.CPU_MANY_MODELS,
  }
  assert 'xla_cpu_experimental_ynn_fusion_type' not in xla_options.compiler_options(
    'bfloat16'
  )
  # An option another jaxlib does not know is dropped, not a failed compile.
  monkeypatch.setattr(xla_options, 'CPU', {'xla_cpu_no_such_option_for_this_test': 1})
  assert xla_options.compiler_options() == xla_options.CPU_FLOAT32
