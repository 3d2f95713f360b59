"""Config validation and the bridge from a ConfigDict to `Hyperparams`/`Static`.

Every user mistake in a config raises `UserError` with one line that names the
field, the bad value and what would be accepted.
"""

import math
import numbers

import ml_collections
import numpy as np

from mlp import augment, model, train
from mlp.errors import UserError

DATA_SOURCES = ('idx', 'tfds')


def _fail(field: str, value, expected: str):
  raise UserError(
    f'config field {field}={value!r} is invalid: expected {expected} '
    f'(set it with --config.{field}=VALUE)'
  )


def _check_int(config, field: str, low: int, high: int | None = None):
  value = config[field]
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    _fail(field, value, 'an integer')
  if value < low or (high is not None and value > high):
    bound = f'>= {low}' if high is None else f'between {low} and {high}'
    _fail(field, value, f'an integer {bound}')


def _check_float(
  config, field: str, low: float, low_inclusive: bool = False, high: float | None = None
):
  value = config[field]
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    _fail(field, value, 'a number')
  ok = math.isfinite(value) and (value >= low if low_inclusive else value > low)
  ok = ok and (high is None or value <= high)
  if not ok:
    relation = '>=' if low_inclusive else '>'
    bound = f'{relation} {low}' + ('' if high is None else f' and <= {high}')
    _fail(field, value, f'a finite number {bound}')


def validate(config: ml_collections.ConfigDict, num_train: int | None = None) -> None:
  """Checks every training field's type and range.

  Args:
    config: a training config (see `configs/default.py`).
    num_train: the training split's size, once known (bounds `batch_size`).

  Raises:
    UserError: naming the first bad field.
  """
  for field in ('hidden_size', 'batch_size', 'num_iters', 'num_val', 'train_eval_size'):
    _check_int(config, field, 1)
  _check_int(config, 'eval_every', 0)
  _check_int(config, 'checkpoint_every', 0)
  _check_int(config, 'keep_checkpoints', 1)
  _check_int(config, 'seed', 0, 2**31 - 1)
  _check_float(config, 'learning_rate', 0.0)
  _check_float(config, 'init_std', 0.0, low_inclusive=True)
  _check_float(config, 'l2_reg', 0.0, low_inclusive=True)
  _check_float(config, 'lr_decay', 0.0, high=1.0)
  for field in ('momentum', 'dropout', 'label_smoothing'):
    _check_float(config, field, 0.0, low_inclusive=True, high=0.99)
  _check_float(config, 'weight_decay', 0.0, low_inclusive=True)
  _check_int(config, 'warmup_iters', 0)
  for field in (
    'augment_rotation',
    'augment_scale',
    'augment_shear',
    'augment_translation',
    'elastic_alpha',
  ):
    _check_float(config, field, 0.0, low_inclusive=True)
  _check_float(config, 'elastic_sigma', 0.0)
  if config.augment_scale >= 1:
    _fail('augment_scale', config.augment_scale, 'a zoom range below 1')
  choices = {
    'optimizer': train.OPTIMIZERS,
    'lr_schedule': train.LR_SCHEDULES,
    'init': model.INITS,
    'sampling': train.SAMPLINGS,
    'compute_dtype': ('float32', 'bfloat16'),
  }
  for field, allowed in choices.items():
    if config[field] not in allowed:
      _fail(field, config[field], f'one of {", ".join(allowed)}')
  if config.data_source not in DATA_SOURCES:
    _fail('data_source', config.data_source, f'one of {", ".join(DATA_SOURCES)}')
  if num_train is not None and config.batch_size > num_train:
    _fail('batch_size', config.batch_size, f'at most the {num_train} training images')


def hyperparams(config: ml_collections.ConfigDict) -> train.Hyperparams:
  """The array-valued hyperparameters of one model, as NumPy scalars."""
  return train.Hyperparams(
    learning_rate=np.float32(config.learning_rate),
    lr_decay=np.float32(config.lr_decay),
    l2_reg=np.float32(config.l2_reg),
    init_std=np.float32(config.init_std),
    seed=np.int32(config.seed),
    num_iters=np.int32(config.num_iters),
    momentum=np.float32(config.momentum),
    weight_decay=np.float32(config.weight_decay),
    dropout=np.float32(config.dropout),
    label_smoothing=np.float32(config.label_smoothing),
    warmup_iters=np.int32(config.warmup_iters),
  )


def augment_config(config: ml_collections.ConfigDict) -> augment.AugmentConfig:
  """The on-device augmentation a config asks for (all zero: none)."""
  return augment.AugmentConfig(
    rotation_degrees=float(config.augment_rotation),
    scale=float(config.augment_scale),
    shear_degrees=float(config.augment_shear),
    translation=float(config.augment_translation),
    elastic_alpha=float(config.elastic_alpha),
    elastic_sigma=float(config.elastic_sigma),
  )


def static(
  config: ml_collections.ConfigDict,
  num_train: int,
  input_size: int,
  num_classes: int,
  max_iters: int | None = None,
  group: list[ml_collections.ConfigDict] | None = None,
) -> train.Static:
  """The shape-fixing part of a config.

  Args:
    config: a training config.
    num_train: size of the training split.
    input_size: D, flattened image size.
    num_classes: C.
    max_iters: the longest run of a sweep; defaults to `config.num_iters`.
    group: every config that shares the program (a sweep's shape group);
      dropout and label smoothing are compiled in if any of them uses it.
  """
  group = group or [config]
  iters_per_epoch = max(num_train // config.batch_size, 1)
  return train.Static(
    input_size=input_size,
    hidden_size=config.hidden_size,
    num_classes=num_classes,
    batch_size=config.batch_size,
    num_train=num_train,
    max_iters=max_iters or config.num_iters,
    eval_every=config.eval_every or iters_per_epoch,
    train_eval_size=min(config.train_eval_size, num_train),
    optimizer=config.optimizer,
    lr_schedule=config.lr_schedule,
    init=config.init,
    sampling=config.sampling,
    use_dropout=any(c.dropout > 0 for c in group),
    use_label_smoothing=any(c.label_smoothing > 0 for c in group),
    augment=augment_config(config),
    compute_dtype=config.compute_dtype,
  )
