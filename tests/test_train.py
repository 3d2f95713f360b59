"""The training function: compile once, vmap equals separate runs, determinism."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mlp import model, train

STATIC = train.Static(
  input_size=12,
  hidden_size=8,
  num_classes=3,
  batch_size=16,
  num_train=96,
  max_iters=40,
  eval_every=10,
  train_eval_size=48,
)


def hparams(
  learning_rate=0.5,
  lr_decay=0.9,
  l2_reg=1e-3,
  init_std=0.1,
  seed=0,
  num_iters=40,
  momentum=0.9,
  weight_decay=0.0,
  dropout=0.0,
  label_smoothing=0.0,
  warmup_iters=0,
):
  return train.Hyperparams(
    np.float32(learning_rate),
    np.float32(lr_decay),
    np.float32(l2_reg),
    np.float32(init_std),
    np.int32(seed),
    np.int32(num_iters),
    np.float32(momentum),
    np.float32(weight_decay),
    np.float32(dropout),
    np.float32(label_smoothing),
    np.int32(warmup_iters),
  )


def stack(*hps):
  return jax.tree.map(lambda *xs: np.stack(xs), *hps)


train_jit = jax.jit(train.train, static_argnames='static')


def test_training_learns(data):
  params, history = train_jit(hparams(), data, static=STATIC)
  np.testing.assert_array_equal(history['step'], [10, 20, 30, 40])
  assert history['train_loss'][-1] < 0.7 * history['train_loss'][0]
  assert history['val_accuracy'][-1] > 0.6
  assert params['W1'].shape == (12, 8)


def test_second_learning_rate_reuses_the_compiled_program(data):
  traced = jax.jit(chex.assert_max_traces(train.train, n=1), static_argnames='static')
  traced(hparams(learning_rate=0.1), data, static=STATIC)
  traced(
    hparams(learning_rate=0.3, l2_reg=0.0, seed=3, init_std=0.2), data, static=STATIC
  )
  assert traced._cache_size() == 1


def test_vmap_equals_separate_runs(data):
  settings = [
    hparams(learning_rate=0.1, seed=1),
    hparams(learning_rate=1.0, l2_reg=0.0, seed=2),
  ]
  vmapped = jax.jit(jax.vmap(train.train, in_axes=(0, None, None)), static_argnums=2)
  params, history = vmapped(stack(*settings), data, STATIC)
  for i, hp in enumerate(settings):
    alone_params, alone_history = train_jit(hp, data, static=STATIC)
    for name in alone_params:
      np.testing.assert_allclose(
        params[name][i], alone_params[name], rtol=1e-5, atol=1e-6
      )
    np.testing.assert_array_equal(
      history['val_accuracy'][i], alone_history['val_accuracy']
    )


def test_same_seed_gives_identical_params(data):
  first, _ = train_jit(hparams(seed=5), data, static=STATIC)
  second, _ = train_jit(hparams(seed=5), data, static=STATIC)
  other, _ = train_jit(hparams(seed=6), data, static=STATIC)
  for name in first:
    np.testing.assert_array_equal(first[name], second[name])
  assert not np.array_equal(first['W1'], other['W1'])


def test_batches_are_drawn_with_replacement_and_shared_by_seed():
  big = train.Static(
    12,
    8,
    3,
    batch_size=4096,
    num_train=50,
    max_iters=1,
    eval_every=1,
    train_eval_size=1,
  )
  idx = np.asarray(train.batch_indices(np.int32(0), np.int32(7), big))
  assert idx.min() >= 0 and idx.max() < 50
  assert len(np.unique(idx)) == 50  # every index drawn, so many repeats
  same = train.batch_indices(np.int32(0), np.int32(7), big)
  np.testing.assert_array_equal(idx, same)
  assert not np.array_equal(idx, train.batch_indices(np.int32(0), np.int32(8), big))
  assert not np.array_equal(idx, train.batch_indices(np.int32(1), np.int32(7), big))


def test_learning_rate_decays_once_per_epoch():
  # 96 images / batch 16 = 6 iterations per epoch.
  hp = hparams(learning_rate=1.0, lr_decay=0.5)
  rates = [
    float(train.learning_rate_at(hp, jnp.int32(s), STATIC)) for s in (0, 5, 6, 11, 12)
  ]
  assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]
  assert STATIC.iters_per_epoch == 6
  tiny = train.Static(
    12, 8, 3, batch_size=200, num_train=50, max_iters=1, eval_every=1, train_eval_size=1
  )
  assert tiny.iters_per_epoch == 1


def test_num_iters_freezes_a_model_inside_a_longer_run(data):
  short = train.Static(**{**STATIC.__dict__, 'max_iters': 25})
  alone, alone_history = train_jit(hparams(num_iters=25), data, static=short)
  frozen, history = train_jit(hparams(num_iters=25), data, static=STATIC)
  for name in alone:
    np.testing.assert_array_equal(frozen[name], alone[name])
  np.testing.assert_array_equal(history['step'], [10, 20, 25, 25])
  assert alone_history['val_accuracy'][-1] == history['val_accuracy'][-1]


def test_segment_loop_matches_the_whole_run(data):
  """The driver's loop over segments, interrupted, gives the same params."""
  hp = hparams()
  segment = jax.jit(train.train_segment, static_argnames='static')

  def run(states_on_host_after=None):
    state = train.init_state(hp, STATIC)
    for end in train.segment_ends(STATIC):
      state, _ = segment(state, hp, data, static=STATIC, end_step=jnp.int32(end))
      if end == states_on_host_after:  # as a checkpoint would: to host and back
        state = jax.device_put(jax.device_get(state))
    return state.params

  uninterrupted, interrupted = run(), run(states_on_host_after=20)
  whole, _ = train_jit(hp, data, static=STATIC)
  for name in whole:
    np.testing.assert_array_equal(interrupted[name], uninterrupted[name])
    np.testing.assert_allclose(uninterrupted[name], whole[name], rtol=1e-5, atol=1e-6)


def test_a_diverging_model_does_not_disturb_its_neighbours(data):
  settings = [hparams(learning_rate=0.3), hparams(learning_rate=1e6, init_std=10.0)]
  vmapped = jax.jit(jax.vmap(train.train, in_axes=(0, None, None)), static_argnums=2)
  params, history = vmapped(stack(*settings), data, STATIC)
  assert not np.isfinite(history['train_loss'][1, -1])
  alone, _ = train_jit(settings[0], data, static=STATIC)
  np.testing.assert_allclose(params['W1'][0], alone['W1'], rtol=1e-5, atol=1e-6)


def test_block_draws_equal_the_per_step_draws():
  drawn = train.draw_block(np.int32(3), jnp.int32(5), STATIC)
  assert drawn.indices.shape == (train.BLOCK_STEPS, STATIC.batch_size)
  for j in (0, 1, train.BLOCK_STEPS - 1):
    np.testing.assert_array_equal(
      drawn.indices[j], train.batch_indices(np.int32(3), np.int32(5 + j), STATIC)
    )


def test_segment_equals_the_steps_one_by_one(data):
  """Pre-drawn blocks and the carried L2 penalty change nothing: the loss is
  `model.loss` of each step's batch at that step's params."""
  static = train.Static(**{**STATIC.__dict__, 'max_iters': 80, 'eval_every': 70})
  hp = hparams(l2_reg=0.05, num_iters=80)
  segment = jax.jit(train.train_segment, static_argnames='static')
  step = jax.jit(train.train_step, static_argnames='static')
  loss_fn = jax.jit(model.loss)
  state = train.init_state(hp, static)
  losses = []
  for t in range(80):  # two segments: 0-70 (blocks cross), 70-80 (starts mid-block)
    idx = train.batch_indices(hp.seed, jnp.int32(t), static)
    x = data.train_images[idx].astype(jnp.float32) / 255.0
    expected = loss_fn(state.params, x, data.train_labels[idx], hp.l2_reg)
    state, loss, active, penalty = step(state, hp, data, static=static)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(penalty, model.l2_penalty(state.params), rtol=1e-5)
    assert bool(active)
    losses.append(float(loss))
  together = train.init_state(hp, static)
  together, first = segment(together, hp, data, static=static, end_step=jnp.int32(70))
  together, second = segment(together, hp, data, static=static, end_step=jnp.int32(80))
  np.testing.assert_allclose(first['train_loss'], np.mean(losses[:70]), rtol=1e-5)
  np.testing.assert_allclose(second['train_loss'], np.mean(losses[70:]), rtol=1e-5)
  for name in state.params:
    np.testing.assert_allclose(
      together.params[name], state.params[name], rtol=1e-5, atol=1e-6
    )


def _segment_of_three_models(data, static, **batched):
  """`train_segment` of three models whose `batched` fields differ, to step 30."""
  from mlp import stacked

  settings = [
    hparams(**{k: v[i] for k, v in batched.items()}, num_iters=80) for i in range(3)
  ]
  hp = stack(*settings)
  hparam_axes = train.Hyperparams(
    **{f: (0 if f in batched else None) for f in train.Hyperparams._fields}
  )
  hp = train.Hyperparams(
    **{
      f: (getattr(hp, f) if f in batched else getattr(settings[0], f))
      for f in train.Hyperparams._fields
    }
  )
  axes = (stacked.STATE_AXES, hparam_axes)
  init = jax.vmap(
    lambda h: train.init_state(h, static), in_axes=(hparam_axes,), out_axes=axes[0]
  )
  segment = jax.jit(
    lambda s, h: train.train_segment(s, h, data, static, jnp.int32(30), model_axes=axes)
  )
  return segment(init(hp), hp), train.wide_eligible(static, axes)


def test_wide_layout_equals_the_vmapped_step(data, monkeypatch):
  static = train.Static(
    **{
      **STATIC.__dict__,
      'max_iters': 80,
      'eval_every': 30,
      'use_label_smoothing': True,
    }
  )
  batched = {
    'learning_rate': (0.1, 0.3, 0.5),
    'l2_reg': (0.0, 1e-3, 1e-2),
    'label_smoothing': (0.0, 0.1, 0.2),
  }
  (wide_state, wide_metrics), used = _segment_of_three_models(data, static, **batched)
  assert used
  monkeypatch.setattr(train, 'wide_eligible', lambda *_: False)
  (state, metrics), _ = _segment_of_three_models(data, static, **batched)
  for name in state.params:
    np.testing.assert_allclose(
      wide_state.params[name], state.params[name], rtol=1e-5, atol=1e-6
    )
  for name in metrics:
    np.testing.assert_allclose(wide_metrics[name], metrics[name], rtol=1e-5)


def test_wide_layout_with_bfloat16_matmuls_tracks_the_vmapped_step(data, monkeypatch):
  # Both round the matmul inputs to bfloat16, in different orders of summation.
  static = train.Static(
    **{
      **STATIC.__dict__,
      'max_iters': 80,
      'eval_every': 30,
      'compute_dtype': 'bfloat16',
    }
  )
  batched = {'learning_rate': (0.1, 0.3, 0.5), 'l2_reg': (0.0, 1e-3, 1e-2)}
  (wide_state, wide_metrics), used = _segment_of_three_models(data, static, **batched)
  assert used
  monkeypatch.setattr(train, 'wide_eligible', lambda *_: False)
  (state, metrics), _ = _segment_of_three_models(data, static, **batched)
  np.testing.assert_allclose(
    wide_metrics['train_loss'], metrics['train_loss'], rtol=1e-2
  )
  np.testing.assert_allclose(
    wide_metrics['val_accuracy'], metrics['val_accuracy'], atol=0.02
  )
  for name in state.params:
    scale = float(np.max(np.abs(state.params[name])))
    np.testing.assert_allclose(
      wide_state.params[name], state.params[name], atol=0.02 * scale
    )


def test_wide_layout_only_for_plain_sgd_with_shared_batches():
  from mlp import stacked

  def eligible(static=STATIC, seed_axis=None):
    hparam_axes = hparams()._replace(**dict.fromkeys(train.Hyperparams._fields, None))
    return train.wide_eligible(
      static, (stacked.STATE_AXES, hparam_axes._replace(seed=seed_axis))
    )

  assert eligible()
  assert not eligible(seed_axis=0)  # each model its own batches
  for change in (
    {'optimizer': 'momentum'},
    {'optimizer': 'adam'},
    {'use_dropout': True},
    {'sampling': 'permutation'},
  ):
    assert not eligible(train.Static(**{**STATIC.__dict__, **change})), change


def test_compiler_options_leave_out_what_xla_does_not_know(monkeypatch):
  # The pinned jaxlib knows every option the training loops ask for.
  assert train.compiler_options('float32', many_models=True) == {
    **train.CPU_COMPILER_OPTIONS,
    **train.CPU_FLOAT32_COMPILER_OPTIONS,
    **train.CPU_MANY_MODELS_COMPILER_OPTIONS,
  }
  assert 'xla_cpu_experimental_ynn_fusion_type' not in train.compiler_options(
    'bfloat16'
  )
  # An option another jaxlib does not know is dropped, not a failed compile.
  monkeypatch.setattr(
    train, 'CPU_COMPILER_OPTIONS', {'xla_cpu_no_such_option_for_this_test': True}
  )
  assert train.compiler_options() == train.CPU_FLOAT32_COMPILER_OPTIONS
