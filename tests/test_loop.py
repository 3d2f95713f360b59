"""The training loop: whole runs, vmapped equals alone, segments, resume."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp import checkpoint, hparams, loop, model
from mlp.progress import Progress
from mlp.step import core
from tests.conftest import STATIC, make_hparams, stack

# With `pytest -n`, one worker runs this module: the tests that share a
# program (`train_jit`, `vmapped`, the trainer's `compile_one`) compile it once,
# instead of two workers compiling it side by side.
pytestmark = pytest.mark.xdist_group('loop')

train_jit = jax.jit(loop.train, static_argnames='static')
vmapped = jax.jit(jax.vmap(loop.train, in_axes=(0, None, None)), static_argnums=2)


def static(**changes) -> core.Static:
  return dataclasses.replace(STATIC, **changes)


def test_training_learns(data):
  params, history = train_jit(make_hparams(), data, static=STATIC)
  np.testing.assert_array_equal(history['step'], [10, 20, 30, 40])
  assert history['train_loss'][-1] < 0.7 * history['train_loss'][0]
  assert history['val_accuracy'][-1] > 0.6
  assert params['W1'].shape == (12, 8)


def test_second_learning_rate_reuses_the_compiled_program(data):
  traced = jax.jit(chex.assert_max_traces(loop.train, n=1), static_argnames='static')
  traced(make_hparams(learning_rate=0.1), data, static=STATIC)
  other = make_hparams(learning_rate=0.3, l2_reg=0.0, seed=3, init_std=0.2)
  traced(other, data, static=STATIC)
  assert traced._cache_size() == 1


def test_vmap_equals_separate_runs(data):
  models = [
    make_hparams(learning_rate=0.1, seed=1),
    make_hparams(learning_rate=1.0, l2_reg=0.0, seed=2),
  ]
  params, history = vmapped(stack(*models), data, STATIC)
  for i, hp in enumerate(models):
    alone_params, alone_history = train_jit(hp, data, static=STATIC)
    for name in alone_params:
      np.testing.assert_allclose(
        params[name][i], alone_params[name], rtol=1e-5, atol=1e-6
      )
    np.testing.assert_array_equal(
      history['val_accuracy'][i], alone_history['val_accuracy']
    )


def test_same_seed_gives_identical_params(data):
  first, _ = train_jit(make_hparams(seed=5), data, static=STATIC)
  second, _ = train_jit(make_hparams(seed=5), data, static=STATIC)
  other, _ = train_jit(make_hparams(seed=6), data, static=STATIC)
  for name in first:
    np.testing.assert_array_equal(first[name], second[name])
  assert not np.array_equal(first['W1'], other['W1'])


def test_num_iters_freezes_a_model_inside_a_longer_run(data):
  short = static(max_iters=25)
  alone, alone_history = train_jit(make_hparams(num_iters=25), data, static=short)
  frozen, history = train_jit(make_hparams(num_iters=25), data, static=STATIC)
  for name in alone:
    np.testing.assert_array_equal(frozen[name], alone[name])
  np.testing.assert_array_equal(history['step'], [10, 20, 25, 25])
  assert alone_history['val_accuracy'][-1] == history['val_accuracy'][-1]


def test_a_diverging_model_does_not_disturb_its_neighbours(data):
  models = [
    make_hparams(learning_rate=0.3),
    make_hparams(learning_rate=1e6, init_std=10.0),
  ]
  params, history = vmapped(stack(*models), data, STATIC)
  assert not np.isfinite(history['train_loss'][1, -1])
  assert np.isfinite(history['learning_rate'][1]).all()  # still its schedule
  alone, _ = train_jit(models[0], data, static=STATIC)
  np.testing.assert_allclose(params['W1'][0], alone['W1'], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('optimizer', ['momentum', 'adam', 'adamw'])
def test_each_optimizer_learns(data, optimizer):
  options = static(optimizer=optimizer, init='he')
  learning_rate = 0.1 if optimizer == 'momentum' else 0.02
  hp = make_hparams(learning_rate=learning_rate, weight_decay=1e-2)
  run = jax.jit(core.run_steps, static_argnames='static')
  state = core.init_state(hp, options)
  losses = []
  for end in (5, 40):
    state, loss_sum, count = run(state, hp, data, options, jnp.int32(end))
    losses.append(float(loss_sum / count))
  assert losses[1] < 0.7 * losses[0]
  params = jax.device_get(state.params)
  accuracy = model.accuracy(params, data.val_images / np.float32(255), data.val_labels)
  assert float(accuracy) > 0.6


def test_exact_accuracies_and_segment_ends():
  metrics = {'val_accuracy': np.float32(0.7446), 'step': np.int32(60)}
  exact = loop.exact_accuracies(metrics, STATIC, num_val=5000)
  assert exact['val_accuracy'] == 3723 / 5000 and exact['step'] == 60
  np.testing.assert_array_equal(loop.segment_ends(static(max_iters=25)), [10, 20, 25])


def _trainer(tmp_path, every=0):
  return loop.Trainer(tmp_path / 'checkpoints', every, 3, Progress(40 * 16))


class Killed(Exception):
  """Stands for a kill right after the evaluation of a given step."""


def test_trainer_resumed_from_a_checkpoint_equals_an_uninterrupted_run(data, tmp_path):
  hp = make_hparams()
  program = loop.compile_one(STATIC, hp, data)

  def describe(metrics):
    return f'step {metrics["step"]}'

  whole = _trainer(tmp_path / 'whole').train(
    'model', program, hp, data, describe=describe
  )
  trainer = _trainer(tmp_path / 'killed')

  def kill_at_20(metrics):
    if metrics['step'] == 30:  # the checkpoint of step 20 is the newest one
      raise Killed

  with pytest.raises(Killed):
    trainer.train(
      'model', program, hp, data, describe=describe, on_evaluation=kill_at_20
    )
  newest = checkpoint.newest_intact(trainer.directory)
  resumed_trainer = _trainer(tmp_path / 'killed')
  assert resumed_trainer.resume_from(newest) == 20
  resumed = resumed_trainer.train('model', program, hp, data, describe=describe)
  assert resumed.resumed_at == 20 and not resumed.diverged
  assert resumed.history == whole.history
  for name, value in whole.state.params.items():
    np.testing.assert_array_equal(resumed.state.params[name], value)


def test_trainer_stops_a_single_diverged_model(data, tmp_path):
  hp = make_hparams(learning_rate=1e6, init_std=10.0)
  program = loop.compile_one(STATIC, hp, data)
  outcome = _trainer(tmp_path).train(
    'model', program, hp, data, describe=str, stop_on_divergence=True
  )
  assert outcome.diverged and len(outcome.history) < STATIC.num_segments


def test_trainer_stops_a_finite_explosion(data, tmp_path, monkeypatch):
  """A loss past DIVERGENCE_FACTOR x the initial loss stops a run like a NaN:
  with the factor made tiny, the first evaluation is past it."""
  hp = make_hparams()
  program = loop.compile_one(STATIC, hp, data)
  monkeypatch.setattr(loop, 'DIVERGENCE_FACTOR', 1e-3)
  outcome = _trainer(tmp_path).train(
    'model', program, hp, data, describe=str, stop_on_divergence=True
  )
  assert outcome.diverged and len(outcome.history) == 1
  assert np.isfinite(outcome.history[0]['train_loss'])
  assert outcome.start_loss == pytest.approx(np.log(3), rel=0.2)


def test_trainer_keeps_finished_jobs_and_checkpoints_every_n_steps(data, tmp_path):
  hp = make_hparams()
  program = loop.compile_one(STATIC, hp, data)
  trainer = _trainer(tmp_path, every=20)
  trainer.train('first', program, hp, data, describe=str)
  trainer.finish('first', {'val_accuracy': 0.5})
  names = [p.name for p in checkpoint.all_checkpoints(trainer.directory)]
  # steps 20 and 40 (every 20 steps, and the last), then the finished job
  assert names == ['ckpt_000000001.npz', 'ckpt_000000002.npz', 'ckpt_000000003.npz']
  later = _trainer(tmp_path)
  assert later.resume_from(checkpoint.newest_intact(trainer.directory)) is None
  assert later.finished == {'first': {'val_accuracy': 0.5}}


def test_a_checkpoint_of_another_format_is_refused(data, tmp_path):
  from mlp.errors import UserError

  directory = tmp_path / 'checkpoints'
  directory.mkdir()
  np.savez(directory / 'ckpt_000000001.npz', __metadata__=np.asarray('{"step": 3}'))
  with pytest.raises(UserError, match='not written by this version.*--restart'):
    checkpoint.newest_intact(directory)


def test_static_for_reads_shapes_choices_and_options(mnist):
  from configs import fast

  config = fast.get_config()
  other = fast.get_config()
  other.dropout = 0.2
  program = loop.static_for([config, other], mnist)
  assert (program.input_size, program.num_classes) == (784, 10)
  assert program.optimizer == 'adam' and program.sampling == 'permutation'
  assert program.options == {'dropout', 'warmup_iters'}
  assert program.eval_every == config.num_iters and program.num_segments == 1
  assert hparams.options_on([config]) == {'warmup_iters'}
