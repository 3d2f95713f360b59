"""The checks of a config that need neither JAX nor data, run before a mode.

`main.py` calls `check` before it imports the mode, so that a config a mode
would refuse (a value out of range, a number the compiled program cannot hold,
missing fields, a sweep too large to build) is refused in a fraction of a
second, before anything is written. The modes check the same again for their
library callers; this module only runs the checks early.
"""

import ml_collections
from absl import logging

from mlp import hparams
from mlp.search import space

_SAY_WHEN = 1000  # models, about a second of building configs
# The searches with settings of their own (`from_config.ADAPTIVE` and 'pbt';
# `from_config` itself imports the strategies, and with them JAX).
_WITH_SETTINGS = ('halving', 'hyperband', 'tpe', 'pbt')


def check(mode: str, config: ml_collections.ConfigDict | None) -> None:
  """Refuses a config that `--mode=mode` would refuse before training.

  Args:
    mode: the value of `--mode`.
    config: the loaded config, or `None`.

  Raises:
    UserError: naming the first problem and its fix.
  """
  if config is None:
    return
  if mode == 'train':
    hparams.validate(config)
  elif mode == 'sweep':
    name = config.get('search', 'grid')
    if name in _WITH_SETTINGS:
      for field in hparams.SEARCH:
        field.check(config.get(field.name, field.default))
    if name == 'hyperband':  # its brackets set the number of draws
      space.swept_values(config)
      return
    num_models = len(space.points(config))  # each model checked, their number bounded
    if num_models >= _SAY_WHEN:  # their configs take seconds to build: say so
      logging.info('Sweep of %d models: building their configs.', num_models)
