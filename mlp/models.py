"""A model the engine trains: pure functions on a params pytree, and the MLP.

The training step, the loop, the evaluations and the memory estimate call a
model only through a `Model`, which `step.core.Static` carries (one compiled
program per model). Any small JAX model fits:

- `init(key, hparams, static) -> params`: a pytree of arrays whose shapes
  depend only on `static` (hidden size, input size, classes), never on a
  hyperparameter's value, so one compiled program serves every value;
- `loss(params, inputs, labels, hparams, static, key) -> scalar`: the training
  loss of a batch, the model's own penalty included; `key` is the step's
  `jax.random.key` (for dropout), or `None` where nothing may be random (the
  loss at initialisation that divergence is measured against);
- `accuracy(params, inputs, labels, static) -> scalar`: the fraction of the
  batch classified correctly (the engine's `val_accuracy`; higher is better).

`hparams` is the `hparams.Hyperparams` of one model: the built-in table's
fields (`hparams.l2_reg`, ...) and, in `hparams.extra`, the model's own
(`Model.hyperparams`). Inputs arrive as float32: uint8 data scaled to [0, 1]
(`data.scale_images`), float data as given. `check` tries a model on abstract
values (`jax.eval_shape`), so a wrong one is refused before anything compiles.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp import hparams as hparams_lib
from mlp import model
from mlp.errors import UserError

# A model's own hyperparameters travel in `Hyperparams.extra`: a pytree node
# whose names are its static part.
jax.tree_util.register_pytree_node(
  hparams_lib.Extra,
  lambda extra: (tuple(extra.values()), tuple(extra)),
  lambda names, values: hparams_lib.Extra(zip(names, values, strict=True)),
)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
  """A model as pure functions (see the module docstring for their contract).

  Attributes:
    name: what the model is, for messages and results ('mlp', 'cnn').
    init: `(key, hparams, static) -> params`.
    loss: `(params, inputs, labels, hparams, static, key) -> scalar`.
    accuracy: `(params, inputs, labels, static) -> scalar`.
    predict: optional `(params, inputs, static) -> (batch,) int32` classes;
      with it, final evaluations count exact predictions (and plots can show
      them); without it they average `accuracy` over pieces of each split.
    hyperparams: the model's own per-model hyperparameters (`hparams.Field`s,
      declared like the built-in table's), read by its loss from
      `hparams.extra[name]`, stacked, swept and validated like the others.
  """

  name: str
  init: Callable[..., Any]
  loss: Callable[..., jax.Array]
  accuracy: Callable[..., jax.Array]
  predict: Callable[..., jax.Array] | None = None
  hyperparams: tuple[hparams_lib.Field, ...] = ()

  def __post_init__(self):
    hparams_lib.check_extra(self.hyperparams)


# The MLP of `mlp.model`, in the form above (its math is `mlp.model`'s).


def mlp_loss_options(
  hparams: hparams_lib.Hyperparams, static, key: jax.Array | None
) -> dict:
  """`model.loss`'s keyword arguments for the options in the program."""
  return {
    'label_smoothing': hparams.label_smoothing
    if static.uses('label_smoothing')
    else None,
    'dropout_rate': hparams.dropout,
    'dropout_key': key if static.uses('dropout') and key is not None else None,
    'compute_dtype': static.compute_dtype,
  }


def _mlp_init(key, hparams, static):
  return model.init_params(
    key,
    static.input_size,
    static.hidden_size,
    static.num_classes,
    hparams.init_std,
    static.init,
  )


def _mlp_loss(params, inputs, labels, hparams, static, key):
  options = mlp_loss_options(hparams, static, key)
  return model.loss(params, inputs, labels, hparams.l2_reg, **options)


def _mlp_accuracy(params, inputs, labels, static):
  return model.accuracy(params, inputs, labels, static.compute_dtype)


def _mlp_predict(params, inputs, static):
  # float32 at the end of a run whatever the training's compute dtype.
  return jnp.argmax(model.apply(params, inputs), -1).astype(jnp.int32)


MLP = Model('mlp', _mlp_init, _mlp_loss, _mlp_accuracy, _mlp_predict)


def flat(params) -> dict[str, Any]:
  """The leaves of a params pytree by path, for `.npz` files and checkpoints.

  A dict of arrays keeps its keys (`W1`, `b1`, ...); a nested pytree's paths
  join with '/' (`params/Dense_0/kernel`, `layers/0/weight`).
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {_path(path): x for path, x in leaves}


def unflat(arrays: dict, like):
  """`flat`'s arrays back in the structure of `like` (params or their shapes)."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  return jax.tree.unflatten(treedef, [arrays[_path(path)] for path, _ in paths])


def _path(path) -> str:
  names = (getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))) for k in path)
  return '/'.join(str(n) for n in names)


def default_hparams(model_: Model) -> hparams_lib.Hyperparams:
  """The declared defaults of the table and of `model_`'s own hyperparameters."""
  return hparams_lib.make(extra=model_.hyperparams)


def param_count(model_: Model, static) -> int:
  """Scalars in `model_`'s params for `static`, from shapes alone (no arrays)."""
  params = init_shapes(model_, default_hparams(model_), static)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def init_shapes(model_: Model, hparams: hparams_lib.Hyperparams, static):
  """`jax.eval_shape` of `model_.init`: the params' structure and shapes.

  Raises:
    UserError: the init failed on abstract values (see `_abstract_call`).
  """
  return _abstract_call(
    model_, 'init', lambda h: model_.init(jax.random.key(0), h, static), hparams
  )


def check(
  model_: Model,
  members: Sequence[tuple[hparams_lib.Hyperparams, Any]],
  input_shape: tuple[int, ...],
  input_dtype=jnp.float32,
) -> None:
  """Refuses a model that cannot train, on abstract values (nothing compiles).

  Args:
    model_: the model.
    members: each member's `(hparams, static)`, one model's scalars.
    input_shape: one example's shape, e.g. `(784,)` or `(28, 28, 1)`.
    input_dtype: the inputs' dtype as the model sees them (float32).

  Raises:
    UserError: naming the problem: the init, loss or accuracy raises on
      abstract values; the loss or accuracy does not return one float
      scalar; or the init's pytree (structure, shapes or dtypes) differs
      between two members of one program, or its structure between any two
      members (a search moves params between members and writes the best's).
  """
  first: dict[Any, tuple[int, Any, Any]] = {}  # by program: member, params, hparams
  structure = None
  for index, (hparams, static) in enumerate(members):
    params = init_shapes(model_, hparams, static)
    tree = jax.tree.structure(params)
    if structure is None:
      structure = (index, tree)
    elif tree != structure[1]:
      raise UserError(
        f'model {model_.name!r}: init returns a pytree of another structure for '
        f'member {index} ({tree}) than for member {structure[0]} ({structure[1]}): '
        'every member must get the same structure (only shapes may follow static)'
      )
    if static not in first:
      first[static] = (index, params, hparams)
    elif _shapes(params) != _shapes(first[static][1]):
      raise UserError(
        f'model {model_.name!r}: init returns params of other shapes for member '
        f'{index} than for member {first[static][0]} of the same program: shapes '
        'must follow static alone, never a hyperparameter value'
      )
  key = jax.random.key(0)
  for static, (_, params, hparams) in first.items():
    batch = jax.ShapeDtypeStruct((static.batch_size, *input_shape), input_dtype)
    labels = jax.ShapeDtypeStruct((static.batch_size,), jnp.int32)
    calls = {
      'loss': lambda p, x, y, h, s=static: model_.loss(p, x, y, h, s, key),
      'accuracy': lambda p, x, y, h, s=static: model_.accuracy(p, x, y, s),
    }
    for name, fn in calls.items():
      out = _abstract_call(model_, name, fn, params, batch, labels, hparams)
      if not (
        isinstance(out, jax.ShapeDtypeStruct)
        and out.shape == ()
        and jnp.issubdtype(out.dtype, jnp.floating)
      ):
        got = jax.tree.map(lambda x: f'{x.dtype}{list(x.shape)}', out)
        raise UserError(
          f'model {model_.name!r}: {name} must return one float scalar, got {got} '
          f'for a batch of {static.batch_size}: average over the batch (jnp.mean)'
        )


def _shapes(params) -> list:
  return [(x.shape, x.dtype) for x in jax.tree.leaves(params)]


def _abstract_call(model_: Model, name: str, fn, *args):
  """`jax.eval_shape(fn, *args)` (args: arrays or their structs), a failure of
  the user's code as a UserError."""
  try:
    return jax.eval_shape(fn, *args)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    raise UserError(
      f'model {model_.name!r}: {name} reads a hyperparameter or array value in '
      'Python (int(), float(), np.asarray, if): use jnp operations on it, and take '
      'shapes from static'
    ) from None
  except Exception as error:  # the user's function; its own message says why
    message = str(error).strip().splitlines()
    raise UserError(
      f'model {model_.name!r}: {name} fails on abstract inputs: '
      f'{type(error).__name__}: {message[0] if message else ""}'
    ) from None
