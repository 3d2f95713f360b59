"""The training step as the math says it, and the loop of such steps.

`train_step` is one step of mini-batch training: the batch of this step
(a function of the seed and the step number), `jax.value_and_grad` of the
model's loss (`Static.model`, the MLP unless told), the optax update at this step's learning rate, and the step's
metrics. Every hyperparameter in `Hyperparams` is an array, so `jax.vmap`
trains many models with one compiled program and a second learning rate
reuses it; everything that fixes shapes or program structure is in `Static`.

This module is the reference: the fast paths beside it (`blocked`, `tall`)
are tested equal to it, and `run_steps` here runs whatever they do not
support.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mlp import augment as augment_lib
from mlp import hparams as hparams_lib
from mlp import models as models_lib
from mlp.data import scale_images
from mlp.hparams import Hyperparams


class DeviceData(NamedTuple):
  """The splits used during training, on device; uint8 images stay uint8."""

  train_images: jax.Array  # (N, D) or (N, ...) uint8, or float inputs
  train_labels: jax.Array  # (N,) int32
  val_images: jax.Array  # (V, D) or (V, ...), as train_images
  val_labels: jax.Array  # (V,) int32


@dataclasses.dataclass(frozen=True)
class Static:
  """Everything that fixes shapes or program structure: one compile per value.

  `optimizer`, `lr_schedule`, `sampling`, `init` and `compute_dtype` are the
  static choices of `hparams.CHOICES`; `options` names the per-model options
  switched on in the program (`hparams.options_on`), whose code is left out
  otherwise. `model` is the model trained (`models.Model`); `input_size` is
  the number of scalars in one input.
  """

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
  sampling: str = 'replacement'
  init: str = 'normal'
  compute_dtype: str = 'float32'
  options: frozenset[str] = frozenset()
  augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig()
  model: models_lib.Model = models_lib.MLP

  @property
  def iters_per_epoch(self) -> int:
    return max(self.num_train // self.batch_size, 1)

  @property
  def num_segments(self) -> int:
    return math.ceil(self.max_iters / self.eval_every)

  def uses(self, option: str) -> bool:
    """Whether per-model option `option` (e.g. 'dropout') is in the program."""
    return option in self.options


class TrainState(NamedTuple):
  params: Any  # the model's params pytree
  opt_state: optax.OptState
  step: jax.Array  # int32 scalar, shared by every model of a sweep.
  train_loss: jax.Array  # mean loss over the last segment (nan before any step).
  order: jax.Array  # sampling 'permutation': this epoch's order, (N,); else (0,).


class Randomness(NamedTuple):
  """A step's random inputs: a function of `(seed, step)` alone."""

  key: jax.Array  # dropout and augmentation fold from it.
  indices: jax.Array  # sampling 'replacement': the batch, (batch_size,); else (0,).


def optimizer(
  static: Static, learning_rate: jax.Array, hparams: Hyperparams
) -> optax.GradientTransformation:
  """The optax update at this step's `learning_rate` (rebuilt every step)."""
  name = static.optimizer
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
  """Initial params (`static.model.init`) and optimizer state."""
  init_key, _ = _keys(hparams.seed)
  params = static.model.init(init_key, hparams, static)
  opt_state = optimizer(static, hparams.learning_rate, hparams).init(params)
  order_size = static.num_train if static.sampling == 'permutation' else 0
  return TrainState(
    params,
    opt_state,
    jnp.zeros((), jnp.int32),
    jnp.full((), jnp.nan),
    jnp.zeros((order_size,), jnp.int32),
  )


def draw(seed: jax.Array, step: jax.Array, static: Static) -> Randomness:
  """The random inputs of `step`: with replacement, `batch_size` indices."""
  key = jax.random.fold_in(_keys(seed)[1], step)
  if static.sampling == 'replacement':
    indices = jax.random.randint(key, (static.batch_size,), 0, static.num_train)
    return Randomness(key, indices)
  return Randomness(key, jnp.zeros((0,), jnp.int32))


def permutation_batch(
  seed: jax.Array, step: jax.Array, order: jax.Array, static: Static
) -> tuple[jax.Array, jax.Array]:
  """Epoch-permutation sampling: `(this epoch's order, the batch of step)`.

  Each epoch visits `iters_per_epoch * batch_size` distinct images once, in an
  order drawn from the seed and the epoch number at the epoch's first step.
  """
  epoch = step // static.iters_per_epoch

  def new_order(_):
    epoch_key = jax.random.fold_in(_keys(seed)[1], -1 - epoch)
    return jax.random.permutation(epoch_key, static.num_train).astype(jnp.int32)

  first = step % static.iters_per_epoch == 0
  order = jax.lax.cond(first, new_order, lambda _: order, None)
  position = (step % static.iters_per_epoch) * static.batch_size
  return order, jax.lax.dynamic_slice(order, (position,), (static.batch_size,))


def batch(
  state: TrainState,
  hparams: Hyperparams,
  data: DeviceData,
  static: Static,
  randomness: Randomness,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(epoch order, inputs (batch, D) float32, labels (batch,))` of this step.

  uint8 inputs are scaled to [0, 1], and augmented on the device if configured.
  """
  if static.sampling == 'permutation':
    order, idx = permutation_batch(hparams.seed, state.step, state.order, static)
  else:
    order, idx = state.order, randomness.indices
  x = scale_images(data.train_images[idx])
  if static.augment.enabled:
    x = augment_lib.augment(jax.random.fold_in(randomness.key, 1), x, static.augment)
  return order, x, data.train_labels[idx]


def loss_key(randomness: Randomness) -> jax.Array:
  """The key a step's loss gets (dropout); augmentation folds in 1, this 2."""
  return jax.random.fold_in(randomness.key, 2)


def clip_by_global_norm(grads, max_norm: jax.Array):
  """`grads` rescaled to at most global norm `max_norm` (0: unchanged)."""
  norm = optax.tree.norm(grads)
  scale = jnp.where((max_norm > 0) & (norm > max_norm), max_norm / norm, 1.0)
  return jax.tree.map(lambda g: g * scale, grads)


def update(
  state: TrainState,
  grads,
  hparams: Hyperparams,
  static: Static,
  order: jax.Array,
) -> tuple[TrainState, jax.Array]:
  """The optimizer's update; a model past its `num_iters` gets a zero step.

  Returns:
    The new state and whether the step was active.
  """
  if static.uses('grad_clip_norm'):
    grads = clip_by_global_norm(grads, hparams.grad_clip_norm)
  active = state.step < hparams.num_iters
  lr = jnp.where(active, learning_rate_at(hparams, state.step, static), 0.0)
  updates, opt_state = optimizer(static, lr, hparams).update(
    grads, state.opt_state, state.params
  )
  params = optax.apply_updates(state.params, updates)
  new_state = state._replace(
    params=params, opt_state=opt_state, step=state.step + 1, order=order
  )
  return new_state, active


def train_step(
  state: TrainState, hparams: Hyperparams, data: DeviceData, static: Static
) -> tuple[TrainState, dict]:
  """One step of mini-batch training.

  Returns:
    The new state, and the step's metrics: `loss` (the model's loss of the
    batch at the old params) and `active` (whether the model trained this step).
  """
  randomness = draw(hparams.seed, state.step, static)
  order, x, y = batch(state, hparams, data, static, randomness)
  loss, grads = jax.value_and_grad(static.model.loss)(
    state.params, x, y, hparams, static, loss_key(randomness)
  )
  state, active = update(state, grads, hparams, static, order)
  return state, {'loss': loss, 'active': active}


def run_steps(
  state: TrainState,
  hparams: Hyperparams,
  data: DeviceData,
  static: Static,
  end_step: jax.Array,
  hparam_axes: Hyperparams | None = None,
) -> tuple[TrainState, jax.Array, jax.Array]:
  """`train_step` from `state.step` up to `end_step`, in one `lax` loop.

  Args:
    state: where training stands.
    hparams: one model's, or with `hparam_axes` many models' stacked.
    data: the device-resident splits.
    static: shapes and structure.
    end_step: int32 scalar, the step to stop at (exclusive).
    hparam_axes: `None` for one model; else the model axis of each field of
      `hparams` (`None`: shared), and the step is vmapped inside the loop
      (every state leaf but `step` has its model axis first).

  Returns:
    The new state, the sum of the active steps' losses and their count.
  """
  step_fn = lambda s, h: train_step(s, h, data, static)  # noqa: E731
  if hparam_axes is not None:
    step_fn = jax.vmap(
      step_fn, in_axes=(STATE_AXES, hparam_axes), out_axes=(STATE_AXES, 0)
    )

  def body(carry):
    state, loss_sum, count = carry
    state, metrics = step_fn(state, hparams)
    active = metrics['active']
    return state, loss_sum + jnp.where(active, metrics['loss'], 0.0), count + active

  zeros = jnp.zeros_like(state.train_loss)
  return jax.lax.while_loop(
    lambda carry: carry[0].step < end_step,
    body,
    (state, zeros, zeros.astype(jnp.int32)),
  )


# The model axis of a state: first on every leaf, except the shared step.
STATE_AXES = TrainState(params=0, opt_state=0, step=None, train_loss=0, order=0)


@dataclasses.dataclass(frozen=True)
class Supports:
  """What a fast path beside this core implements; nothing else is assumed.

  A path is chosen only for programs it covers (`covers`), so an option
  added to the core later is not silently ignored by a path that predates
  it: until the path declares it, programs that use it run the core.

  Attributes:
    choices: for each static choice of `hparams.CHOICES`, the values the path
      implements; a choice it does not name is implemented at its default only.
    hyperparams: the per-model hyperparameters it implements.
    per_model: those of them that may differ between its models (the rest
      must be shared, e.g. the seed, so that the models share their batches).
    many_models: whether the path needs a model axis.
    models: the models it implements (their own math is in the path): a
      program of any other model runs the core.
  """

  choices: Mapping[str, tuple[str, ...]]
  hyperparams: frozenset[str]
  per_model: frozenset[str] = frozenset()
  many_models: bool = False
  models: tuple[models_lib.Model, ...] = ()

  def covers(self, static: Static, hparam_axes: Hyperparams | None) -> bool:
    """Whether the path implements everything this program uses."""
    if static.model not in self.models:
      return False
    if self.many_models and hparam_axes is None:
      return False
    choices = {c.name: getattr(static, c.name) for c in hparams_lib.CHOICES}
    for choice in hparams_lib.CHOICES:
      if choices[choice.name] not in self.choices.get(choice.name, (choice.default,)):
        return False
    used = {
      f.name
      for f in hparams_lib.PER_MODEL
      if hparams_lib.applies(f, choices) and (f.off is None or static.uses(f.name))
    }
    if not used <= self.hyperparams:
      return False
    if hparam_axes is None:
      return True
    axes = hparam_axes._asdict()
    varying = {name for name in hparams_lib.NAMES if axes[name] is not None}
    return varying & used <= self.per_model
