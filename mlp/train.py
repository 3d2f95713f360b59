"""Training: the one training function that train, sweep and benchmark share.

`train_segment` advances a `TrainState` by SGD steps up to a given step and then
evaluates; `train` is a whole run (init, then `lax.scan` over segments) in one
pure function. Every hyperparameter that a sweep varies is an array in
`Hyperparams`, so `jax.vmap` over them trains many models in one compiled
program, and a second learning rate reuses the compiled code. Shapes live in
the hashable `Static`.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from mlp import augment as augment_lib
from mlp import model, wide
from mlp.data import scale_images


class Hyperparams(NamedTuple):
  """Per-model hyperparameters, scalars (or stacked along a model axis)."""

  learning_rate: jax.Array  # float32: the initial step size.
  lr_decay: jax.Array  # float32: factor applied after every epoch.
  l2_reg: jax.Array  # float32: lambda of the L2 penalty.
  init_std: jax.Array  # float32: standard deviation of the initial weights.
  seed: jax.Array  # int32: initial weights and the mini-batch sequence.
  num_iters: jax.Array  # int32: training stops (params freeze) after this many steps.
  momentum: jax.Array  # float32: for optimizer 'momentum' / 'nesterov'.
  weight_decay: jax.Array  # float32: decoupled weight decay of 'adamw'.
  dropout: jax.Array  # float32: fraction of hidden units dropped in training.
  label_smoothing: jax.Array  # float32: epsilon of the smoothed targets.
  warmup_iters: jax.Array  # int32: linear warm-up of lr_schedule 'cosine'.


class DeviceData(NamedTuple):
  """The splits used during training, on device; images stay uint8."""

  train_images: jax.Array  # (N, D) uint8
  train_labels: jax.Array  # (N,) int32
  val_images: jax.Array  # (V, D) uint8
  val_labels: jax.Array  # (V,) int32


@dataclasses.dataclass(frozen=True)
class Static:
  """Everything that fixes shapes or program structure: one compile per value."""

  input_size: int
  hidden_size: int
  num_classes: int
  batch_size: int
  num_train: int
  max_iters: int
  eval_every: int
  train_eval_size: int
  optimizer: str = 'sgd'
  lr_schedule: str = 'epoch_decay'
  init: str = 'normal'
  sampling: str = 'replacement'
  use_dropout: bool = False
  use_label_smoothing: bool = False
  augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig()
  compute_dtype: str = 'float32'

  @property
  def iters_per_epoch(self) -> int:
    return max(self.num_train // self.batch_size, 1)

  @property
  def num_segments(self) -> int:
    return math.ceil(self.max_iters / self.eval_every)


class TrainState(NamedTuple):
  params: model.Params
  opt_state: optax.OptState
  step: jax.Array  # int32 scalar, shared by every model of a sweep.
  train_loss: jax.Array  # mean loss over the last segment (nan before any step).
  order: jax.Array  # sampling 'permutation': this epoch's order, (N,); else (0,).


# XLA:CPU options for the compiled training loop. Region-based copy insertion
# lets the loop update W1 in place instead of copying it every step.
CPU_COMPILER_OPTIONS = {'xla_cpu_copy_insertion_use_region_analysis': True}
# With float32 matmuls, YNNPACK takes only the reductions (the L2 penalties: one
# read of W1, where XLA's own tree reduction writes W1 squared first); the
# matmuls stay with XLA's Eigen dots, which run the training step's float32
# shapes faster. bfloat16 matmuls are faster in YNNPACK, so there it keeps them.
CPU_FLOAT32_COMPILER_OPTIONS = {
  'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'
}


# For many models at once: XLA's concurrency-optimized scheduler (the 27-model
# benchmark step about 5% faster in interleaved runs; one model, no gain).
CPU_MANY_MODELS_COMPILER_OPTIONS = {
  'xla_cpu_enable_concurrency_optimized_scheduler': True
}


def compiler_options(compute_dtype: str = 'float32', many_models: bool = False) -> dict:
  """The XLA options for the training loop on the default backend.

  Options are speed only, never results: one that this jaxlib's XLA does not
  know (they are experimental and change between versions) is left out with
  a warning instead of failing the compile.

  Args:
    compute_dtype: the matmuls' input dtype (`Static.compute_dtype`).
    many_models: whether the loop trains a stacked group of models.
  """
  if jax.default_backend() != 'cpu':
    return {}
  options = dict(CPU_COMPILER_OPTIONS)
  if compute_dtype == 'float32':
    options.update(CPU_FLOAT32_COMPILER_OPTIONS)
  if many_models:
    options.update(CPU_MANY_MODELS_COMPILER_OPTIONS)
  return {name: value for name, value in options.items() if _known(name, value)}


@functools.cache
def _known(name: str, value) -> bool:
  """Whether XLA accepts the compiler option `name=value` (a trivial compile)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(
      jnp.zeros(())
    ).compile()
  except jax.errors.JaxRuntimeError as error:
    logging.warning('XLA option %s=%r left out: %s', name, value, error)
    return False
  return True


OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw')
LR_SCHEDULES = ('epoch_decay', 'cosine')
SAMPLINGS = ('replacement', 'permutation')


def _optimizer(
  name: str, learning_rate: jax.Array, hparams: Hyperparams
) -> optax.GradientTransformation:
  """The optax update for this step's `learning_rate` (rebuilt every step)."""
  if name == 'sgd':
    return optax.sgd(learning_rate)
  if name in ('momentum', 'nesterov'):
    return optax.sgd(
      learning_rate, momentum=hparams.momentum, nesterov=name == 'nesterov'
    )
  if name == 'adam':
    return optax.adam(learning_rate)
  if name == 'adamw':
    return optax.adamw(learning_rate, weight_decay=hparams.weight_decay)
  raise ValueError(f'unknown optimizer {name!r}')


def learning_rate_at(
  hparams: Hyperparams, step: jax.Array, static: Static
) -> jax.Array:
  """Step size at `step`.

  'epoch_decay' (the course's): multiplied by `lr_decay` after every epoch.
  'cosine': linear warm-up over `warmup_iters`, then a cosine from the peak
  down to zero at `num_iters`.
  """
  if static.lr_schedule == 'cosine':
    step = step.astype(jnp.float32)
    warmup = hparams.warmup_iters.astype(jnp.float32)
    ramp = jnp.minimum((step + 1.0) / jnp.maximum(warmup, 1.0), 1.0)
    span = jnp.maximum(hparams.num_iters.astype(jnp.float32) - warmup, 1.0)
    progress = jnp.clip((step - warmup) / span, 0.0, 1.0)
    return hparams.learning_rate * ramp * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  epoch = step // static.iters_per_epoch
  return hparams.learning_rate * hparams.lr_decay ** epoch.astype(jnp.float32)


def _keys(seed: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(init key, data key) from a seed; models sharing a seed share batches."""
  init_key, data_key = jax.random.split(jax.random.key(seed))
  return init_key, data_key


def init_state(hparams: Hyperparams, static: Static) -> TrainState:
  """Initial params (see `model.init_params`) and optimizer state."""
  init_key, _ = _keys(hparams.seed)
  params = model.init_params(
    init_key,
    static.input_size,
    static.hidden_size,
    static.num_classes,
    hparams.init_std,
    static.init,
  )
  opt_state = _optimizer(static.optimizer, hparams.learning_rate, hparams).init(params)
  order_size = static.num_train if static.sampling == 'permutation' else 0
  return TrainState(
    params,
    opt_state,
    jnp.zeros((), jnp.int32),
    jnp.full((), jnp.nan),
    jnp.zeros((order_size,), jnp.int32),
  )


def _step_key(seed: jax.Array, step: jax.Array) -> jax.Array:
  _, data_key = _keys(seed)
  return jax.random.fold_in(data_key, step)


def batch_indices(seed: jax.Array, step: jax.Array, static: Static) -> jax.Array:
  """The mini-batch of `step`: `batch_size` indices drawn with replacement."""
  return _indices(_step_key(seed, step), static)


def _indices(step_key: jax.Array, static: Static) -> jax.Array:
  return jax.random.randint(step_key, (static.batch_size,), 0, static.num_train)


def _epoch_order(seed: jax.Array, step: jax.Array, order: jax.Array, static: Static):
  """This epoch's permutation of the training set: drawn anew at each epoch start."""
  epoch = step // static.iters_per_epoch

  def draw(_):
    epoch_key = jax.random.fold_in(_keys(seed)[1], -1 - epoch)
    return jax.random.permutation(epoch_key, static.num_train).astype(jnp.int32)

  return jax.lax.cond(step % static.iters_per_epoch == 0, draw, lambda _: order, None)


def permutation_batch(
  seed: jax.Array, step: jax.Array, order: jax.Array, static: Static
) -> tuple[jax.Array, jax.Array]:
  """Epoch-permutation sampling: `(this epoch's order, the batch of step)`.

  Each epoch visits `iters_per_epoch * batch_size` distinct images once, in an
  order drawn from the seed and the epoch number.
  """
  order = _epoch_order(seed, step, order, static)
  position = (step % static.iters_per_epoch) * static.batch_size
  return order, jax.lax.dynamic_slice(order, (position,), (static.batch_size,))


class StepRandomness(NamedTuple):
  """A step's random inputs, drawn ahead for a block of steps (see `draw_block`)."""

  key: jax.Array  # the step's key: dropout and augmentation fold from it.
  indices: jax.Array  # sampling 'replacement': the batch, (batch_size,); else (0,).


# Steps whose random inputs are drawn at once: one vectorized threefry call
# per block instead of several small ones per step (the per-step calls cost
# about as much as the W1 update at the default shapes on CPU).
BLOCK_STEPS = 32


def draw_step(seed: jax.Array, step: jax.Array, static: Static) -> StepRandomness:
  """The random inputs of `step`: a function of `(seed, step)` alone."""
  key = _step_key(seed, step)
  if static.sampling == 'replacement':
    return StepRandomness(key, _indices(key, static))
  return StepRandomness(key, jnp.zeros((0,), jnp.int32))


def draw_block(
  seed: jax.Array, first_step: jax.Array, static: Static
) -> StepRandomness:
  """`draw_step` of steps `first_step ... first_step + BLOCK_STEPS - 1`, stacked."""
  steps = first_step + jnp.arange(BLOCK_STEPS, dtype=jnp.int32)
  draw = functools.partial(draw_step, static=static)
  return jax.vmap(draw, in_axes=(None, 0))(seed, steps)


def _batch(
  state: TrainState,
  hparams: Hyperparams,
  data: DeviceData,
  static: Static,
  randomness: StepRandomness,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(epoch order, inputs, labels)` of this step, augmented if configured."""
  if static.sampling == 'permutation':
    order, idx = permutation_batch(hparams.seed, state.step, state.order, static)
  else:
    order, idx = state.order, randomness.indices
  x = scale_images(data.train_images[idx])
  if static.augment.enabled:
    x = augment_lib.augment(jax.random.fold_in(randomness.key, 1), x, static.augment)
  return order, x, data.train_labels[idx]


def train_step(
  state: TrainState,
  hparams: Hyperparams,
  data: DeviceData,
  static: Static,
  randomness: StepRandomness | None = None,
  penalty: jax.Array | None = None,
) -> tuple[TrainState, jax.Array, jax.Array, jax.Array]:
  """One SGD step. A model past its `num_iters` gets a zero step (params frozen).

  Args:
    state: where training stands.
    hparams: the model's hyperparameters.
    data: the device-resident splits.
    static: shapes and structure.
    randomness: this step's `draw_step` (from a `draw_block`); `None` draws
      it here.
    penalty: `model.l2_penalty(state.params)` if known (the previous step
      returned it), else `None`.

  Returns:
    The new state, the mini-batch loss, whether the step was active, and the
    L2 penalty of the new params.
  """
  step = state.step
  if randomness is None:
    randomness = draw_step(hparams.seed, step, static)
  if penalty is None:
    penalty = model.l2_penalty(state.params)
  order, x, y = _batch(state, hparams, data, static, randomness)
  step_key = randomness.key
  (_, data_loss), grads = jax.value_and_grad(
    model.loss_and_cross_entropy, has_aux=True
  )(
    state.params,
    x,
    y,
    hparams.l2_reg,
    hparams.label_smoothing if static.use_label_smoothing else None,
    hparams.dropout,
    jax.random.fold_in(step_key, 2) if static.use_dropout else None,
    static.compute_dtype,
  )
  # The loss of `model.loss`, from the penalty the previous step computed: the
  # weights are read once before the update, which then happens in place.
  loss = data_loss + 0.5 * hparams.l2_reg * penalty
  active = step < hparams.num_iters
  lr = jnp.where(active, learning_rate_at(hparams, step, static), 0.0)
  updates, opt_state = _optimizer(static.optimizer, lr, hparams).update(
    grads, state.opt_state, state.params
  )
  params = optax.apply_updates(state.params, updates)
  new_state = state._replace(
    params=params, opt_state=opt_state, step=step + 1, order=order
  )
  return new_state, loss, active, model.l2_penalty(params)


def wide_step(
  state: TrainState,
  hparams: Hyperparams,
  data: DeviceData,
  randomness: StepRandomness,
  penalty: jax.Array,
  *,
  static: Static,
  hparam_axes: Hyperparams,
) -> tuple[TrainState, jax.Array, jax.Array, jax.Array]:
  """`train_step` of SGD models sharing their batches, params in `wide` layout.

  The same step as `jax.vmap(train_step)` for the models `wide_eligible`
  accepts: the group's loss is the sum of the models' `model.loss`es, so each
  gets its own gradient, and the update is `optax.sgd`'s, per model.
  """
  step = state.step
  _, x, y = _batch(state, hparams, data, static, randomness)
  smoothing = hparams.label_smoothing if static.use_label_smoothing else None
  (_, data_loss), grads = jax.value_and_grad(wide.loss_and_cross_entropy, has_aux=True)(
    state.params,
    x,
    y,
    hparams.l2_reg,
    smoothing,
    hparam_axes.label_smoothing if static.use_label_smoothing else None,
    static.compute_dtype,
  )
  loss = data_loss + 0.5 * hparams.l2_reg * penalty
  active = step < hparams.num_iters
  lr = jnp.where(active, learning_rate_at(hparams, step, static), 0.0)
  params = wide.sgd_update(state.params, grads, lr)
  return (
    state._replace(params=params, step=step + 1),
    loss,
    active,
    wide.l2_penalty(params),
  )


def wide_eligible(static: Static, model_axes: tuple[TrainState, Hyperparams]) -> bool:
  """Whether `wide_step` can train these models: plain SGD, batches shared (one
  seed), sampling with replacement, no dropout, params stacked model axis first."""
  state_axes, hparam_axes = model_axes
  return (
    static.optimizer == 'sgd'
    and static.sampling == 'replacement'
    and not static.use_dropout
    and hparam_axes.seed is None
    and state_axes.params == 0
  )


def evaluate(params: model.Params, data: DeviceData, static: Static) -> dict:
  """Accuracy on the first `train_eval_size` training images and on val."""
  n = static.train_eval_size
  return {
    'train_accuracy': model.accuracy(
      params,
      scale_images(data.train_images[:n]),
      data.train_labels[:n],
      static.compute_dtype,
    ),
    'val_accuracy': model.accuracy(
      params, scale_images(data.val_images), data.val_labels, static.compute_dtype
    ),
  }


def train_segment(
  state: TrainState,
  hparams: Hyperparams,
  data: DeviceData,
  static: Static,
  end_step: jax.Array,
  model_axes: tuple[TrainState, Hyperparams] | None = None,
) -> tuple[TrainState, dict]:
  """Steps from `state.step` to `end_step` inside one loop, then an evaluation.

  Args:
    state: where training stands.
    hparams: the model's hyperparameters, scalars; or, with `model_axes`, many
      models' stacked along a model axis.
    data: the device-resident splits.
    static: shapes and structure.
    end_step: int32 scalar, the step to stop at (exclusive), at most `max_iters`.
    model_axes: `None` for one model. For many models, where each leaf of the
      state and of `hparams` has its model axis (`None`: shared by all). The
      step and the evaluation are then `vmap`ped inside the loop, so the loop
      carries the state in exactly that layout (a `vmap` around the loop would
      carry every array model-axis-first and transpose `W1` on every step).

  Returns:
    The new state, and the metrics at `end_step` (per model with `model_axes`):
    `step`, `train_loss` (mean mini-batch loss of the segment), `learning_rate`
    (of its last step), `train_accuracy` (on the training subset) and
    `val_accuracy`.
  """

  def step_fn(state, hparams, data, randomness, penalty):
    return train_step(state, hparams, data, static, randomness, penalty)

  draw_fn = functools.partial(draw_block, static=static)
  penalty_fn = model.l2_penalty
  evaluate_fn = functools.partial(evaluate, static=static)
  in_wide_layout = model_axes is not None and wide_eligible(static, model_axes)
  if model_axes is not None:
    state_axes, hparam_axes = model_axes
    evaluate_fn = jax.vmap(evaluate_fn, in_axes=(state_axes.params, None))
  if in_wide_layout:
    step_fn = functools.partial(wide_step, static=static, hparam_axes=hparam_axes)
    penalty_fn = wide.l2_penalty
    state = state._replace(params=wide.to_wide(state.params))
  elif model_axes is not None:
    seed_axis = hparam_axes.seed
    if seed_axis is not None:  # per-model draws, stacked (BLOCK_STEPS, models, ...)
      draw_fn = jax.vmap(draw_fn, in_axes=(seed_axis, None), out_axes=1)
    step_fn = jax.vmap(
      step_fn,
      in_axes=(state_axes, hparam_axes, None, seed_axis, 0),
      out_axes=(state_axes, 0, 0, 0),
    )
    penalty_fn = jax.vmap(penalty_fn, in_axes=(state_axes.params,))

  def block(carry):
    state, loss_sum, count = carry
    draws = draw_fn(hparams.seed, state.step)
    first = state.step

    def body(i, carry):
      state, loss_sum, count, penalty = carry
      randomness = jax.tree.map(lambda x: x[i - first], draws)
      state, loss, active, penalty = step_fn(state, hparams, data, randomness, penalty)
      return state, loss_sum + jnp.where(active, loss, 0.0), count + active, penalty

    last = jnp.minimum(first + BLOCK_STEPS, end_step)
    carry = (state, loss_sum, count, penalty_fn(state.params))
    return jax.lax.fori_loop(first, last, body, carry)[:3]

  zeros = jnp.zeros_like(state.train_loss)
  state, loss_sum, count = jax.lax.while_loop(
    lambda carry: carry[0].step < end_step,
    block,
    (state, zeros, zeros.astype(jnp.int32)),
  )
  if in_wide_layout:
    state = state._replace(params=wide.from_wide(state.params))
  train_loss = jnp.where(count > 0, loss_sum / jnp.maximum(count, 1), state.train_loss)
  state = state._replace(train_loss=train_loss)
  steps_done = jnp.minimum(state.step, hparams.num_iters)
  metrics = {
    'step': steps_done + jnp.zeros_like(count),
    'train_loss': train_loss,
    'learning_rate': learning_rate_at(hparams, jnp.maximum(steps_done - 1, 0), static)
    + zeros,
    **evaluate_fn(state.params, data),
  }
  return state, metrics


def exact_accuracies(metrics: dict, static: Static, num_val: int) -> dict:
  """Host metrics with float32 accuracies snapped to exact fractions k / n."""
  sizes = {'train_accuracy': static.train_eval_size, 'val_accuracy': num_val}
  return {
    k: np.round(np.asarray(v, np.float64) * sizes[k]) / sizes[k]
    if k in sizes
    else np.asarray(v)
    for k, v in metrics.items()
  }


def segment_ends(static: Static) -> np.ndarray:
  """The step at which each evaluation happens: every `eval_every`, and the last."""
  return np.minimum(
    np.arange(1, static.num_segments + 1) * static.eval_every, static.max_iters
  ).astype(np.int32)


def train(
  hparams: Hyperparams, data: DeviceData, static: Static
) -> tuple[model.Params, dict]:
  """A whole training run as one pure function (init, then scan over segments).

  Args:
    hparams: scalars; `jax.vmap` this function for many models at once.
    data: the device-resident splits.
    static: shapes and structure (mark static under `jax.jit`).

  Returns:
    The final params and the history: each metric of `train_segment` stacked
    over evaluations, `(num_segments,)`.
  """
  state = init_state(hparams, static)

  def body(state, end_step):
    return train_segment(state, hparams, data, static, end_step)

  state, history = jax.lax.scan(body, state, jnp.asarray(segment_ends(static)))
  return state.params, history
