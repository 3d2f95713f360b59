"""Command line of the MLP trainer: flags only; the logic lives in `mlp/`.

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --mode=eval --workdir=runs/default
  python main.py --mode=sweep --config=configs/sweep.py --workdir=runs/sweep
  python main.py --mode=benchmark --config=configs/benchmark.py --workdir=runs/bench
  python main.py --mode=predict --workdir=runs/default --images='my_digits/*.png'
  python main.py --mode=predict --workdir=runs/default --images='docs/samples/*.jpg' \
    --save_preprocessed=/tmp/seen   # also writes the 28x28 images the model saw
  python main.py --mode=serve --workdir=runs/default   # a page to draw digits on
  python main.py --help --config=configs/default.py   # also lists the config's fields

Every mistake a user can fix ends in one line on stderr, `Error: ...`, and a
non-zero exit code (2 for flags and config files, 1 otherwise); a diverged
training run exits 1 too.
"""

import errno
import logging as std_logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

# JAX and the modes are imported in `_dispatch`, so that `--help` stays fast.
from mlp import cli, compile_cache, interrupt, logs
from mlp.errors import UserError
from mlp.search import preflight

MODES = ('train', 'eval', 'sweep', 'predict', 'serve', 'benchmark')

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Path to a config file, e.g. configs/default.py.', lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Directory for outputs (train) or inputs (eval).'
)
_MODE = flags.DEFINE_enum('mode', 'train', MODES, 'What to do.')
_RESTART = flags.DEFINE_bool(
  'restart',
  False,
  'Delete the outputs and checkpoints of a previous run in --workdir and start over '
  '(without it, a run resumes from its newest checkpoint).',
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address',
  None,
  'Multi-process runs: host:port of process 0 (jax.distributed).',
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Multi-process runs: how many.'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id', None, "Multi-process runs: this process's rank."
)
_DISTRIBUTED = flags.DEFINE_bool(
  'distributed',
  False,
  'Join a multi-process run whose settings JAX detects (SLURM, Cloud TPU).',
)
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
  'distributed_timeout',
  300,
  'Seconds to wait for every process of a multi-process run.',
)
_IMAGES = flags.DEFINE_string(
  'images', None, '--mode=predict: image files, comma-separated, globs allowed.'
)
_JSON = flags.DEFINE_bool(
  'json', False, '--mode=predict: print a JSON list instead of lines.'
)
_SAVE_PREPROCESSED = flags.DEFINE_string(
  'save_preprocessed',
  None,
  '--mode=predict: a directory for the 28x28 images the model saw, one PNG each.',
)
_PORT = flags.DEFINE_integer(
  'port', 8000, '--mode=serve: the port to listen on (0 = a free one).', 0, 65535
)
_HOST = flags.DEFINE_string(
  'host',
  '127.0.0.1',
  '--mode=serve: the address to listen on; another than 127.0.0.1 (e.g. 0.0.0.0) '
  'opens the page to other machines.',
)
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
  'compilation_cache_dir',
  compile_cache.default_dir(),
  "Where compiled programs are cached across runs ('' = no cache). "
  '--mode=benchmark never uses it: it measures compile time.',
)
_VERBOSE = flags.DEFINE_bool(
  'verbose',
  False,
  "Log lines with absl's full prefix (level, date, time, thread, file:line) instead "
  "of HH:MM:SS; any of absl's logging flags (--verbosity, --log_dir, ...) does too.",
)
# The modes that read a config file (eval, predict and serve read the workdir's).
_NEEDS_CONFIG = ('train', 'sweep', 'benchmark')
flags.register_validator(
  'workdir',
  lambda value: value is None or bool(value.strip()),
  message='--workdir is empty: pass a directory for the run, e.g. --workdir=runs/NAME',
)
flags.register_validator(
  'num_processes',
  lambda value: value is None or value >= 1,
  message='--num_processes must be at least 1 (the processes of the run, this one '
  'included)',
)


def _fail(message: str, exit_code: int = 1) -> NoReturn:
  logging.flush()
  print(f'Error: {message}', file=sys.stderr)
  sys.exit(exit_code)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with every mistake in flags or config files as one line."""
  try:
    return _parse_flags_or_fail(argv)
  except interrupt.Interrupted as e:  # Ctrl-C while a config file loads
    _fail('Interrupted while loading the flags and the --config file', e.exit_code)


def _parse_flags_or_fail(argv: list[str]) -> list[str]:
  config_parser = flags.FLAGS['config'].parser
  if cli.help_asked(argv):
    if error := cli.print_help(argv, config_parser, app.usage):
      _fail(error, 2)
    sys.exit(0)
  try:
    remaining = flags.FLAGS(cli.last_overrides(argv))
    if cli.config_argument(argv) is not None:
      cli.usable(_CONFIG.value)  # A config file that failed to load raises only now.
  except Exception as e:  # noqa: BLE001 -- flags, overrides, config files
    _fail(cli.flag_error(e, argv, config_parser), 2)
  # Missing flags are flag errors (exit 2), like absl's own.
  if _WORKDIR.value is None:
    _fail('--workdir=DIR is required: the directory of the run (see --helpshort)', 2)
  if _CONFIG.value is None and _MODE.value in _NEEDS_CONFIG:
    _fail(f'--mode={_MODE.value} needs --config=configs/NAME.py (see --helpshort)', 2)
  if _CONFIG.value is not None:
    path = config_flags.get_config_filename(flags.FLAGS['config'])
    if mismatch := cli.mode_mismatch(_MODE.value, _CONFIG.value, path):
      _fail(mismatch, 2)
  return remaining


def _dispatch(mode: str) -> None:
  """Runs `mode`; its module is imported here, only when it runs."""
  config = _CONFIG.value
  if mode == 'eval':
    from mlp.modes import eval as eval_mode

    eval_mode.run(config, _WORKDIR.value)
  elif mode == 'predict':
    from mlp.modes import predict

    sys.exit(
      predict.run(
        _WORKDIR.value,
        _IMAGES.value or '',
        _JSON.value,
        save_preprocessed=_SAVE_PREPROCESSED.value,
      )
    )
  elif mode == 'serve':
    from mlp.modes import serve

    serve.run(_WORKDIR.value, _PORT.value, _HOST.value)
  elif mode == 'train':
    from mlp.modes import train

    summary = train.run(config, _WORKDIR.value, restart=_RESTART.value)
    if summary['diverged']:
      raise UserError(train.divergence_message(config, summary))
  elif mode == 'sweep':
    from mlp.modes import sweep

    sweep.run(config, _WORKDIR.value, restart=_RESTART.value)
  elif mode == 'benchmark':
    from mlp.modes import benchmark

    benchmark.run(config, _WORKDIR.value)


def _error_message(error: UserError) -> str:
  """The error's line; after a failed write, also what the run keeps."""
  from mlp import workdir

  if not isinstance(error, workdir.WriteError) or _MODE.value not in ('train', 'sweep'):
    return str(error)
  from mlp import checkpoint  # JAX: only once a run has written

  kept = checkpoint.describe_newest(Path(_WORKDIR.value))
  fix = 'free some space; ' if error.errno == errno.ENOSPC else ''
  return f'{error}; {fix}{kept}'


def _interrupted_message(error: interrupt.Interrupted) -> str:
  """The interruption's line; for train and sweep, also what the run keeps."""
  if _MODE.value not in ('train', 'sweep'):
    return 'Interrupted'
  checkpoint = sys.modules.get('mlp.checkpoint')  # not imported: nothing started
  if checkpoint is None or not Path(_WORKDIR.value).is_dir():
    return error.message('nothing was written: the same command starts over')
  return error.message(checkpoint.describe_newest(Path(_WORKDIR.value)))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(
      f'unexpected arguments: {" ".join(argv[1:])} (flags look like --name=value)', 2
    )
  if not _VERBOSE.value and not logs.absl_flags_given(flags.FLAGS):
    logs.use_plain_format()
  interrupt.install()
  try:
    preflight.check(_MODE.value, _CONFIG.value)  # before JAX is imported
    from mlp import distributed

    distributed.initialize(
      _COORDINATOR.value,
      _NUM_PROCESSES.value,
      _PROCESS_ID.value,
      _DISTRIBUTED.value,
      _DISTRIBUTED_TIMEOUT.value,
    )
    if _MODE.value != 'benchmark':
      compile_cache.enable(_COMPILATION_CACHE_DIR.value)
    _dispatch(_MODE.value)
  except interrupt.Interrupted as e:
    _fail(_interrupted_message(e), e.exit_code)
  except UserError as e:
    _fail(_error_message(e))
  except BrokenPipeError:  # `main.py --mode=predict ... | head -1` stopped reading
    cli.drop_stdout()
    _fail('the output was cut short: its reader closed standard output early')
  except Exception as e:
    distributed = sys.modules.get('mlp.distributed')
    if distributed is None or (message := distributed.lost_peer(e)) is None:
      raise
    logging.flush()
    print(f'Error: {message}', file=sys.stderr, flush=True)
    # Not sys.exit: JAX's exit handler would wait for the lost process.
    os._exit(1)


def run() -> None:
  """The command line's entry point (`python main.py`, or `mlp` once installed)."""
  # The TPU probe's "Unable to initialize backend" line is noise on CPU/GPU.
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
  interrupt.install()  # before the flags: a config file may take a while to load
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
