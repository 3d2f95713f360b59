"""The training step: the core, the fast paths beside it, and the one chooser.

- `core`: the step as the math says it (batch, `value_and_grad(model.loss)`,
  optax update, metrics) and a plain loop of it. It runs any program.
- `blocked`: the core step with its random inputs drawn 32 steps at a time and
  the reported loss's L2 penalty carried from the previous step.
- `tall`: plain-SGD models sharing their batches, their first layers stacked
  into one tall matrix.
- `xla_options`: the XLA options the training loops compile with.

Each fast path declares what it implements (`SUPPORTS`) and is tested equal to
the core; `choose` is the only place that picks one.
"""

import types

from mlp.hparams import Hyperparams
from mlp.step import blocked, core, tall

# In order of preference; the core runs whatever none of them covers.
FAST_PATHS = (tall, blocked)


def choose(static: core.Static, hparam_axes: Hyperparams | None) -> types.ModuleType:
  """The fastest path that covers the program, else `core`.

  Args:
    static: the program's shapes and choices.
    hparam_axes: `None` for one model; else the model axis of each
      hyperparameter (`None`: shared by every model).

  Returns:
    A module with `run_steps(state, hparams, data, static, end_step,
    hparam_axes)`.
  """
  for path in FAST_PATHS:
    if path.SUPPORTS.covers(static, hparam_axes):
      return path
  return core
