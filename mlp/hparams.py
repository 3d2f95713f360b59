"""The one table of hyperparameters: every other list of them derives from it.

`PER_MODEL` declares each hyperparameter that may differ between the models of
one compiled program (name, dtype, default, valid range, the value at which
it is off, and the static choice it belongs to). From it come:

- `Hyperparams`, the pytree of per-model arrays the training step reads;
- `validate`, the check of a config's values;
- the sweep's fields (`SWEEPABLE`, `INTEGER`) and `configs/sweep.py`'s;
- `make`, the tests' factory.

`CHOICES` declares the static choices (optimizer, schedule, sampling, init,
compute dtype): one compiled program per value. `SHAPES` (hidden and batch
size) change array shapes: a sweep groups its models by them. `SETTINGS` are
the rest of a training config (evaluation, checkpoints, augmentation).

Adding a swept hyperparameter is one `Field` here, one default in
`configs/default.py` and one use site (see `grad_clip_norm` in
`mlp/step/core.py`). This module imports no JAX, so config files may use it.
"""

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from mlp.errors import UserError

# The widths of the compiled program's numbers: integers are int32, per-model
# floats float32 (bfloat16, the other compute dtype, has float32's exponents).
INT32_MAX = int(np.iinfo(np.int32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The most models one sweep may hold: its configs alone take seconds to build
# per ten thousand models, and its training far longer.
MAX_MODELS = 10_000


@dataclasses.dataclass(frozen=True)
class Field:
  """One declared hyperparameter or setting.

  Attributes:
    name: the config field's name.
    dtype: `int` or `float`.
    default: the value a config without the field gets.
    low: smallest valid value.
    high: largest valid value.
    low_open: whether `low` itself is invalid.
    high_open: whether `high` itself is invalid.
    off: the value at which the option does nothing (its code is then left out
      of the compiled program); `None` if the value always matters.
    only_with: `(choice, values)`: the field is read only under these values of
      a static choice (momentum only by the momentum optimizers).
    needs: another field that must be on (away from its `off`) for this one
      to be read (`elastic_sigma` by `elastic_alpha`).
    doc: what it is, one line.
  """

  name: str
  dtype: type
  default: int | float
  low: float
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  off: int | float | None = None
  only_with: tuple[str, tuple[str, ...]] | None = None
  needs: str | None = None
  doc: str = ''

  def _shown(self, bound: float) -> str:
    return str(int(bound)) if self.dtype is int else f'{bound:g}'

  def expected(self) -> str:
    """What a valid value looks like, for error messages."""
    kind = 'an integer' if self.dtype is int else 'a finite number'
    low = (
      f'> {self._shown(self.low)}' if self.low_open else f'>= {self._shown(self.low)}'
    )
    if math.isinf(self.high):
      return f'{kind} {low}'
    high = self._shown(self.high)
    if not (self.low_open or self.high_open):
      return f'{kind} between {self._shown(self.low)} and {high}'
    return f'{kind} {low} and {"<" if self.high_open else "<="} {high}'

  def problem(self, value: Any) -> str | None:
    """Why `value` is invalid for this field (`None` when it is valid).

    Beyond the declared range: an integer must fit the int32 the compiled
    program holds it in, and a non-zero float must stay a normal float32
    number (the dtype of `Hyperparams`; bfloat16 has the same exponent
    range), so that it neither rounds to 0 nor to infinity.
    """
    number = numbers.Integral if self.dtype is int else numbers.Real
    valid = (
      not isinstance(value, bool)
      and isinstance(value, number)
      and math.isfinite(value)
      and (value > self.low if self.low_open else value >= self.low)
      and (value < self.high if self.high_open else value <= self.high)
    )
    if not valid:
      return f'expected {self.expected()}'
    if self.dtype is int and abs(value) > INT32_MAX:
      return (
        f'it does not fit the int32 the compiled program holds it in (at most '
        f'{INT32_MAX})'
      )
    if self.dtype is float and value != 0 and abs(value) < FLOAT32_TINY:
      return (
        f'it rounds to 0 (or loses its precision) in float32, whose smallest normal '
        f'number is {FLOAT32_TINY:.4g}'
      )
    if self.dtype is float and abs(value) > FLOAT32_MAX:
      return (
        f'it rounds to infinity in float32, whose largest number is {FLOAT32_MAX:.4g}'
      )
    return None

  def check(self, value: Any) -> None:
    """Raises `UserError` unless `value` is valid for this field."""
    if problem := self.problem(value):
      raise UserError(
        f'config field {self.name}={value!r} is invalid: {problem} '
        f'(set it with --config.{self.name}=VALUE)'
      )


@dataclasses.dataclass(frozen=True)
class Choice:
  """A static choice: one compiled program per value."""

  name: str
  values: tuple[str, ...]
  doc: str = ''

  @property
  def default(self) -> str:
    return self.values[0]

  def check(self, value: Any) -> None:
    if value not in self.values:
      raise UserError(
        f'config field {self.name}={value!r} is invalid: expected one of '
        f'{", ".join(self.values)} (set it with --config.{self.name}=VALUE)'
      )


# Per-model hyperparameters: arrays in the compiled program, so one compile
# serves every value, and a sweep stacks them along a model axis.
PER_MODEL = (
  Field('learning_rate', float, 0.1, 0.0, low_open=True, doc='initial step size'),
  Field(
    'lr_decay',
    float,
    0.95,
    0.0,
    1.0,
    low_open=True,
    only_with=('lr_schedule', ('epoch_decay',)),
    doc='factor applied to the step size after every epoch',
  ),
  Field('l2_reg', float, 1e-4, 0.0, doc='lambda of the L2 penalty on W1 and W2'),
  Field(
    'init_std',
    float,
    1e-4,
    0.0,
    only_with=('init', ('normal',)),
    doc='standard deviation of the initial weights',
  ),
  Field('seed', int, 0, 0, 2**31 - 1, doc='initial weights and mini-batch sequence'),
  Field('num_iters', int, 2000, 1, doc='training steps (a model stops after them)'),
  Field(
    'momentum',
    float,
    0.9,
    0.0,
    0.99,
    only_with=('optimizer', ('momentum', 'nesterov')),
    doc='momentum of the momentum optimizers',
  ),
  Field(
    'weight_decay',
    float,
    0.0,
    0.0,
    off=0.0,
    only_with=('optimizer', ('adamw',)),
    doc="decoupled weight decay of 'adamw'",
  ),
  Field('dropout', float, 0.0, 0.0, 0.99, off=0.0, doc='hidden units dropped'),
  Field('label_smoothing', float, 0.0, 0.0, 0.99, off=0.0, doc='target smoothing'),
  Field(
    'warmup_iters',
    int,
    0,
    0,
    off=0,
    only_with=('lr_schedule', ('cosine',)),
    doc="linear warm-up steps of the 'cosine' schedule",
  ),
  Field(
    'grad_clip_norm',
    float,
    0.0,
    0.0,
    off=0.0,
    doc='gradients rescaled to at most this global norm (0 = no clipping)',
  ),
)

# Static choices: part of the compiled program. The first value is the default.
CHOICES = (
  Choice('optimizer', ('sgd', 'momentum', 'nesterov', 'adam', 'adamw'), 'update rule'),
  Choice(
    'lr_schedule',
    ('epoch_decay', 'cosine'),
    'x lr_decay after every epoch, or cosine to 0 (after warmup_iters)',
  ),
  Choice(
    'sampling',
    ('replacement', 'permutation'),
    'batches drawn with replacement, or each image once per epoch',
  ),
  Choice(
    'init', ('normal', 'he'), 'initial weights: N(0, init_std^2) or N(0, 2 / fan_in)'
  ),
  Choice(
    'compute_dtype',
    ('float32', 'bfloat16'),
    'matmul inputs (accumulation and params stay float32)',
  ),
)
# Where the data comes from: not part of the program.
DATA_SOURCE = Choice(
  'data_source', ('idx', 'tfds'), 'the vendored IDX files, or a prepared TFDS copy'
)

# Fields that change array shapes: a sweep compiles one program per value.
SHAPES = (
  Field('hidden_size', int, 300, 1, doc='H, hidden units'),
  Field('batch_size', int, 200, 1, doc='examples per step'),
)

# The rest of a training config that has a range to check.
SETTINGS = (
  Field('num_val', int, 5000, 1, doc='last training images held out as val'),
  Field(
    'train_eval_size',
    int,
    5000,
    1,
    doc="the first training images of each evaluation's train accuracy",
  ),
  Field('eval_every', int, 0, 0, doc='steps between evaluations (0 = an epoch)'),
  Field('checkpoint_every', int, 0, 0, doc='steps between checkpoints (0 = each)'),
  Field('keep_checkpoints', int, 3, 1, doc='newest checkpoints kept'),
  Field('augment_rotation', float, 0.0, 0.0, off=0.0, doc='degrees'),
  Field(
    'augment_scale', float, 0.0, 0.0, 1.0, high_open=True, off=0.0, doc='zoom range'
  ),
  Field('augment_shear', float, 0.0, 0.0, 90.0, high_open=True, off=0.0, doc='degrees'),
  Field('augment_translation', float, 0.0, 0.0, off=0.0, doc='pixels'),
  Field('elastic_alpha', float, 0.0, 0.0, off=0.0, doc='pixels'),
  Field(
    'elastic_sigma', float, 4.0, 0.0, low_open=True, needs='elastic_alpha', doc='pixels'
  ),
)

# Settings of the adaptive searches of a sweep (`config.search`, see
# `configs/sweep.py`), checked by the sweep that uses them.
SEARCH = (
  Field('eta', int, 3, 2, doc="'halving': 1/eta of a rung's models go on"),
  Field('min_iters', int, 100, 1, doc="'halving': the first rung's steps (at least)"),
  Field('max_iters', int, 0, 0, doc="'halving': the last rung's steps (0 = num_iters)"),
  Field(
    'pbt_interval', int, 0, 0, doc="'pbt': steps between exploits (0 = eval_every)"
  ),
  Field(
    'pbt_fraction',
    float,
    0.25,
    0.0,
    0.5,
    low_open=True,
    doc="'pbt': the worst fraction copies the best fraction",
  ),
  Field('pbt_perturb', float, 1.25, 1.0, doc="'pbt': a copy's value x or / this"),
  Field('pbt_resample', float, 0.25, 0.0, 1.0, doc="'pbt': chance of a fresh draw"),
  Field(
    'tpe_batch',
    int,
    16,
    1,
    doc="'tpe': members asked at once, then trained through the rungs together",
  ),
)

# The fields of a training config that have no range to check.
UNCHECKED = ('dataset', 'data_dir', 'data_url', 'write_plots')

FIELDS = {f.name: f for f in (*PER_MODEL, *SHAPES, *SETTINGS)}
NAMES = tuple(f.name for f in PER_MODEL)
SWEEPABLE = NAMES + tuple(f.name for f in SHAPES)
INTEGER = frozenset(f.name for f in (*PER_MODEL, *SHAPES) if f.dtype is int)


class Extra(Mapping):
  """A model's own hyperparameters by name (`models.Model.hyperparams`).

  A read-only mapping, registered as a pytree by `mlp.models` (this module
  imports no JAX). Like `Hyperparams` it holds values or, as the in_axes of
  a compiled program, axes; axes hash, so a program's `hparam_axes` can be a
  static argument.
  """

  def __init__(self, items: Mapping | Iterable = ()):
    self._items = dict(items)

  def __getitem__(self, name: str):
    return self._items[name]

  def __iter__(self):
    return iter(self._items)

  def __len__(self) -> int:
    return len(self._items)

  def __hash__(self) -> int:
    return hash(tuple(self._items.items()))

  def __eq__(self, other) -> bool:
    return isinstance(other, Extra) and tuple(self._items.items()) == tuple(
      other._items.items()
    )

  def __repr__(self) -> str:
    return f'Extra({self._items!r})'


Hyperparams = NamedTuple(
  'Hyperparams', [*((f.name, Any) for f in PER_MODEL), ('extra', Extra)]
)
Hyperparams.__doc__ = """Per-model hyperparameters (see `PER_MODEL`): one scalar
array each, or stacked along a model axis. `extra` holds a model's own
(`models.Model.hyperparams`) by name, the same way (empty for the MLP)."""
Hyperparams.__new__.__defaults__ = (Extra(),)


def check_extra(fields: Iterable[Field]) -> None:
  """Refuses a model's own hyperparameters that clash with the declared ones.

  Raises:
    ValueError: a name that the table, the shapes, the settings or a static
      choice already use, or twice; a dtype other than `int` or `float`; or
      a default outside its own range.
  """
  taken = set(FIELDS) | {c.name for c in (*CHOICES, DATA_SOURCE)} | {'extra'}
  for field in fields:
    if field.name in taken or not field.name.isidentifier():
      raise ValueError(
        f'hyperparameter {field.name!r} is taken or not a name: call it otherwise'
      )
    if field.dtype not in (int, float):
      raise ValueError(f'hyperparameter {field.name!r}: dtype must be int or float')
    try:
      field.check(field.default)
    except UserError:
      raise ValueError(
        f'hyperparameter {field.name!r}: default {field.default!r} is not '
        f'{field.expected()}'
      ) from None
    taken.add(field.name)


def validate(
  config: Mapping, num_train: int | None = None, extra: Iterable[Field] = ()
) -> None:
  """Checks every declared field of a training config.

  Args:
    config: a training config (see `configs/default.py`), or its dict.
    num_train: the training split's size, once known (bounds `batch_size`).
    extra: a model's own hyperparameters (absent from `config`: their default).

  Raises:
    UserError: naming the first bad field, its value and what is accepted,
      or the fields the config lacks.
  """
  if lacking := missing(config):
    more = f' and {len(lacking) - 5} more' if len(lacking) > 5 else ''
    raise UserError(
      f'the config lacks the field(s) {", ".join(lacking[:5])}{more}: start its '
      'get_config() from the defaults (from configs import default; '
      'config = default.get_config()) or set them'
    )
  for field in FIELDS.values():
    field.check(config[field.name])
  for field in extra:
    field.check(config.get(field.name, field.default))
  for choice in (*CHOICES, DATA_SOURCE):
    choice.check(config[choice.name])
  if num_train is not None and config['batch_size'] > num_train:
    raise UserError(
      f'config field batch_size={config["batch_size"]} is invalid: expected at most the '
      f'{num_train} training images (set it with --config.batch_size=VALUE)'
    )


def missing(config: Mapping) -> list[str]:
  """The fields of a training config (see `configs/default.py`) that `config` lacks."""
  names = (*FIELDS, *(c.name for c in (*CHOICES, DATA_SOURCE)), *UNCHECKED)
  return [name for name in names if name not in config]


def check_num_models(num_models: int, fix: str) -> None:
  """Refuses a sweep of more than `MAX_MODELS` models before it is built.

  Args:
    num_models: the models the sweep's config asks for.
    fix: the change that lowers them, for the message.

  Raises:
    UserError: when `num_models` exceeds `MAX_MODELS`.
  """
  if num_models > MAX_MODELS:
    raise UserError(
      f'the sweep has {num_models:,} models, more than the {MAX_MODELS:,} one sweep '
      f'may hold (building their configs alone would take minutes): {fix}'
    )


def check_range(name: str, values: Iterable) -> None:
  """Refuses a swept field's values (or random range's bounds) that the field
  itself would refuse, with a message that names `config.sweep.NAME`."""
  field = FIELDS.get(name)
  if field is None:  # a model's own hyperparameter: `validate(extra=...)` checks it
    return
  for value in values:
    if problem := field.problem(value):
      raise UserError(
        f'config.sweep.{name} holds {value!r}, which is invalid: {problem} '
        f'(change it in --config.sweep.{name})'
      )


def divergence_fix(config: Mapping, start_loss_finite: bool) -> str:
  """The field to change after a run of `config` diverged, and its value.

  Args:
    config: the training config that diverged.
    start_loss_finite: whether the loss of the initial params was finite.

  Returns:
    E.g. 'lower --config.l2_reg (now 1e+30)': the initial scale when the
    loss was not finite before the first step; `l2_reg` when it exceeds 1
    and the penalty's own step (`learning_rate * l2_reg`) does too, which
    makes the weights grow at every step; else the learning rate.
  """
  if not start_loss_finite and config['init'] == 'normal':
    name = 'init_std'
  elif config['l2_reg'] > 1 and config['learning_rate'] * config['l2_reg'] > 1:
    name = 'l2_reg'
  else:
    name = 'learning_rate'
  return f'lower --config.{name} (now {config[name]:g})'


def of_config(config: Mapping, extra: Iterable[Field] = ()) -> Hyperparams:
  """One model's hyperparameters as NumPy scalars (int32 or float32).

  Args:
    config: a training config.
    extra: a model's own hyperparameters (absent from `config`: their default).
  """
  return Hyperparams(
    **{f.name: _scalar(f, config[f.name]) for f in PER_MODEL},
    extra=Extra((f.name, _scalar(f, config.get(f.name, f.default))) for f in extra),
  )


def make(extra: Iterable[Field] = (), **values) -> Hyperparams:
  """Hyperparameters with the declared defaults except `values` (for tests).

  Args:
    extra: a model's own hyperparameters, which `values` may also set.
    **values: values by field name.
  """
  extra = tuple(extra)
  unknown = set(values) - set(NAMES) - {f.name for f in extra}
  if unknown:
    raise TypeError(f'unknown hyperparameters: {sorted(unknown)}')
  return of_config({f.name: f.default for f in PER_MODEL} | values, extra)


def names_of(hparams: Hyperparams) -> tuple[str, ...]:
  """Every hyperparameter of `hparams` by name: the table's, then its extras."""
  return NAMES + tuple(hparams.extra)


def value_of(hparams: Hyperparams, name: str):
  """The field `name` of `hparams`, the table's or an extra."""
  return hparams.extra[name] if name in hparams.extra else getattr(hparams, name)


def varying(models: list[Hyperparams]) -> tuple[str, ...]:
  """The fields that differ between `models` (at least one: `jax.vmap` needs
  a batched input)."""
  names = [
    n for n in names_of(models[0]) if len({value_of(m, n).item() for m in models}) > 1
  ]
  return tuple(names) or ('learning_rate',)


def stack(
  models: list[Hyperparams], fields: tuple[str, ...] | None = None
) -> tuple[Hyperparams, Hyperparams]:
  """Many models' hyperparameters along a model axis, and the matching in_axes.

  The `fields` (default: `varying(models)`) are stacked (axis 0); the others
  stay the first model's scalar (axis `None`), so that, for example, models
  sharing a seed share their mini-batches. A sweep passes the fields that vary
  over its whole grid, so that every chunk of models has the same structure
  and one compiled program serves them all.
  """
  varying_fields = varying(models) if fields is None else fields
  values, axes = {}, {}
  for name in names_of(models[0]):
    if name in varying_fields:
      values[name], axes[name] = np.stack([value_of(m, name) for m in models]), 0
    else:
      values[name], axes[name] = value_of(models[0], name), None
  extra = tuple(models[0].extra)
  return (
    Hyperparams(
      **{n: values[n] for n in NAMES}, extra=Extra((n, values[n]) for n in extra)
    ),
    Hyperparams(
      **{n: axes[n] for n in NAMES}, extra=Extra((n, axes[n]) for n in extra)
    ),
  )


def options_on(configs: Iterable[Mapping]) -> frozenset[str]:
  """Per-model options switched on (away from `off`) in any of `configs`.

  The compiled program includes an option's code only when it is on, so a
  run without dropout does not pay for it.
  """
  configs = list(configs)
  return frozenset(
    f.name
    for f in PER_MODEL
    if f.off is not None
    and applies(f, configs[0])
    and any(c[f.name] != f.off for c in configs)
  )


def in_effect(configs: Iterable[Mapping]) -> tuple[str, ...]:
  """The fields and static choices that shape the training of `configs`.

  The shapes; each per-model field that is read under the static choices and,
  if it can be off, is on in any of `configs`; the static choices; the
  settings that are on (augmentation). A report's table of options and
  TensorBoard's HParams dashboard list these.
  """
  configs = list(configs)
  on = options_on(configs)
  per_model = [
    f.name
    for f in PER_MODEL
    if applies(f, configs[0]) and (f.off is None or f.name in on)
  ]

  def setting_on(field: Field) -> bool:
    if field.needs is not None:
      return setting_on(FIELDS[field.needs])
    return field.off is not None and any(c[field.name] != field.off for c in configs)

  settings = [f.name for f in SETTINGS if setting_on(f)]
  return (
    *(f.name for f in SHAPES),
    *per_model,
    *(c.name for c in CHOICES),
    *settings,
  )


def applies(field: Field, choices: Mapping) -> bool:
  """Whether `field` is read under these static choices."""
  if field.only_with is None:
    return True
  choice, values = field.only_with
  return choices[choice] in values


def _scalar(field: Field, value) -> np.ndarray:
  return np.asarray(value, np.int32 if field.dtype is int else np.float32)
