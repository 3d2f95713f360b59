"""Command line of the MLP trainer: flags only; the logic lives in `mlp/`.

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --mode=eval --workdir=runs/default

Every mistake a user can fix ends in one line on stderr and exit code 1.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mlp import run
from mlp.errors import UserError

MODES = ('train', 'eval')

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Path to a config file, e.g. configs/default.py.', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs (train) or inputs (eval).')
_MODE = flags.DEFINE_enum('mode', 'train', MODES, 'What to do.')
flags.mark_flags_as_required(['workdir'])


def _dispatch(mode: str) -> None:
  config = _CONFIG.value
  if mode == 'eval':
    run.evaluate_workdir(config, _WORKDIR.value)
    return
  if config is None:
    raise UserError(f'--mode={mode} needs --config=configs/NAME.py')
  if mode == 'train':
    run.train_and_evaluate(config, _WORKDIR.value)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    _dispatch(_MODE.value)
  except UserError as e:
    logging.flush()
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
