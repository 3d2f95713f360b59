"""Fast path: random inputs drawn for 32 steps at once, the L2 penalty carried.

The same step as `core.train_step`, for one model or vmapped models, with two
changes that leave the results alone:

- The random inputs of `BLOCK_STEPS` steps (`core.draw` of each) are drawn by
  one vectorized call, instead of several small threefry loops per step.
- The reported loss is the cross-entropy plus the L2 penalty of the params,
  which the previous step computed from the params it wrote. The step itself
  then reads the weights once, and XLA can update `W1` in place.
"""

import functools

import jax
import jax.numpy as jnp

from mlp import model, models
from mlp.hparams import Hyperparams
from mlp.step import core

BLOCK_STEPS = 32

_HYPERPARAMS = frozenset(
  {
    'learning_rate',
    'lr_decay',
    'l2_reg',
    'init_std',
    'seed',
    'num_iters',
    'momentum',
    'weight_decay',
    'dropout',
    'label_smoothing',
    'warmup_iters',
    'grad_clip_norm',
  }
)
# Everything the core does: the step is the core's, but for where its random
# inputs come from and how the reported loss gets its penalty.
SUPPORTS = core.Supports(
  choices={
    'optimizer': ('sgd', 'momentum', 'nesterov', 'adam', 'adamw'),
    'lr_schedule': ('epoch_decay', 'cosine'),
    'sampling': ('replacement', 'permutation'),
    'init': ('normal', 'he'),
    'compute_dtype': ('float32', 'bfloat16'),
  },
  hyperparams=_HYPERPARAMS,
  per_model=_HYPERPARAMS,
  models=(models.MLP,),  # the penalty it carries is the MLP's
)


def draw_block(
  seed: jax.Array, first_step: jax.Array, static: core.Static
) -> core.Randomness:
  """`core.draw` of steps `first_step ... first_step + BLOCK_STEPS - 1`, stacked."""
  steps = first_step + jnp.arange(BLOCK_STEPS, dtype=jnp.int32)
  draw = functools.partial(core.draw, static=static)
  return jax.vmap(draw, in_axes=(None, 0))(seed, steps)


def train_step(
  state: core.TrainState,
  hparams: Hyperparams,
  data: core.DeviceData,
  static: core.Static,
  randomness: core.Randomness,
  penalty: jax.Array,
) -> tuple[core.TrainState, dict, jax.Array]:
  """`core.train_step` with its random inputs given and the penalty carried.

  Args:
    state, hparams, data, static: as for `core.train_step`.
    randomness: `core.draw` of this step.
    penalty: `model.l2_penalty(state.params)`.

  Returns:
    The new state, the metrics of `core.train_step`, and the L2 penalty of the
    new params.
  """
  order, x, y = core.batch(state, hparams, data, static, randomness)
  options = models.mlp_loss_options(hparams, static, core.loss_key(randomness))
  (_, cross_entropy), grads = jax.value_and_grad(
    model.loss_and_cross_entropy, has_aux=True
  )(state.params, x, y, hparams.l2_reg, **options)
  loss = cross_entropy + 0.5 * hparams.l2_reg * penalty
  state, active = core.update(state, grads, hparams, static, order)
  return state, {'loss': loss, 'active': active}, model.l2_penalty(state.params)


def run_blocks(step_fn, penalty_fn, draw_fn, state, hparams, end_step):
  """The loop of a blocked path: `step_fn` up to `end_step`, in blocks.

  Args:
    step_fn: `(state, hparams, randomness, penalty) -> (state, metrics, penalty)`.
    penalty_fn: the L2 penalty of `state.params` (per model).
    draw_fn: `(seed, first_step) -> randomness` of a block of steps.
    state: where training stands.
    hparams: the step's hyperparameters.
    end_step: int32 scalar, the step to stop at (exclusive).

  Returns:
    The new state, the sum of the active steps' losses and their count.
  """

  def block(carry):
    state, loss_sum, count = carry
    draws = draw_fn(hparams.seed, state.step)
    first = state.step

    def body(i, carry):
      state, loss_sum, count, penalty = carry
      randomness = jax.tree.map(lambda x: x[i - first], draws)
      state, metrics, penalty = step_fn(state, hparams, randomness, penalty)
      active = metrics['active']
      loss_sum = loss_sum + jnp.where(active, metrics['loss'], 0.0)
      return state, loss_sum, count + active, penalty

    last = jnp.minimum(first + BLOCK_STEPS, end_step)
    carry = (state, loss_sum, count, penalty_fn(state.params))
    return jax.lax.fori_loop(first, last, body, carry)[:3]

  zeros = jnp.zeros_like(state.train_loss)
  return jax.lax.while_loop(
    lambda carry: carry[0].step < end_step,
    block,
    (state, zeros, zeros.astype(jnp.int32)),
  )


def run_steps(
  state: core.TrainState,
  hparams: Hyperparams,
  data: core.DeviceData,
  static: core.Static,
  end_step: jax.Array,
  hparam_axes: Hyperparams | None = None,
) -> tuple[core.TrainState, jax.Array, jax.Array]:
  """As `core.run_steps`, with this module's step."""

  def step_fn(state, hparams, randomness, penalty):
    return train_step(state, hparams, data, static, randomness, penalty)

  draw_fn = functools.partial(draw_block, static=static)
  penalty_fn = model.l2_penalty
  if hparam_axes is not None:
    seed_axis = hparam_axes.seed
    if seed_axis is not None:  # per-model draws, stacked (BLOCK_STEPS, models, ...)
      draw_fn = jax.vmap(draw_fn, in_axes=(seed_axis, None), out_axes=1)
    step_fn = jax.vmap(
      step_fn,
      in_axes=(core.STATE_AXES, hparam_axes, seed_axis, 0),
      out_axes=(core.STATE_AXES, 0, 0),
    )
    penalty_fn = jax.vmap(penalty_fn)
  return run_blocks(step_fn, penalty_fn, draw_fn, state, hparams, end_step)
