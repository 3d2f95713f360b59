"""Command line of the MLP trainer: flags only; the logic lives in `mlp/`.

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --mode=eval --workdir=runs/default
  python main.py --mode=sweep --config=configs/sweep.py --workdir=runs/sweep
  python main.py --mode=benchmark --config=configs/benchmark.py --workdir=runs/bench
  python main.py --mode=predict --workdir=runs/default --images='my_digits/*.png'
  python main.py --help --config=configs/default.py   # also lists the config's fields

Every mistake a user can fix ends in one line on stderr, `Error: ...`, and a
non-zero exit code (2 for flags and config files, 1 otherwise); a diverged
training run exits 1 too.
"""

import difflib
import logging as std_logging
import os
import re
import sys
import sysconfig
import traceback
from typing import NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

# JAX and the modes are imported in `_dispatch`, so that `--help` stays fast.
from mlp import compile_cache
from mlp.errors import UserError

MODES = ('train', 'eval', 'sweep', 'predict', 'benchmark')
# Config fields that make a config belong to one mode (see configs/sweep.py).
_MODE_FIELDS = ('sweep', 'benchmark')

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
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
  'compilation_cache_dir',
  compile_cache.default_dir(),
  "Where compiled programs are cached across runs ('' = no cache). "
  '--mode=benchmark never uses it: it measures compile time.',
)
flags.mark_flags_as_required(['workdir'])


def _fail(message: str, exit_code: int = 1) -> NoReturn:
  logging.flush()
  print(f'Error: {message}', file=sys.stderr)
  sys.exit(exit_code)


def _message(error: BaseException) -> str:
  """The text of `error` on one line, unwrapped from the exception it wraps."""
  while len(error.args) == 1 and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error)
  if isinstance(error, KeyError) and len(error.args) == 1:
    # str() of a KeyError is the repr of its text: quotes and '\n' escaped.
    key = error.args[0]
    text = key if isinstance(key, str) and '\n' in key else repr(key)
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def _flag_arguments(argv: list[str]) -> list[str]:
  """The command line's arguments up to `--` (after it, nothing is a flag)."""
  return argv[1 : argv.index('--')] if '--' in argv else argv[1:]


def _config_argument(argv: list[str]) -> str | None:
  """The value of the last `--config=FILE` (or `--config FILE`), as typed."""
  arguments = _flag_arguments(argv)
  value = None
  for i, argument in enumerate(arguments):
    if match := re.fullmatch(r'--?config(=(.*))?', argument, re.DOTALL):
      value = match[2] if match[1] else next(iter(arguments[i + 1 : i + 2]), None)
  return value


def _load_config(argument: str) -> ml_collections.ConfigDict:
  """The config of `--config=argument`, as ml_collections loads it (no overrides)."""
  return _usable(flags.FLAGS['config'].parser.parse(argument))


def _usable(config: object) -> ml_collections.ConfigDict:
  """`config`, or the error that loading its file raised."""
  if not isinstance(config, ml_collections.ConfigDict):
    # ml_collections' stand-in for a file that failed to load raises its error.
    getattr(config, 'keys', None)
    raise TypeError(f'get_config() returned {type(config).__name__}, not a ConfigDict')
  return config


def _fields(config: ml_collections.ConfigDict, prefix: str = '') -> dict[str, object]:
  """Every field of `config`, nested ones flattened (`sweep`, `sweep.hidden_size`)."""
  fields = {}
  for name, value in config.items():
    fields[prefix + name] = value
    if isinstance(value, ml_collections.ConfigDict):
      fields.update(_fields(value, f'{prefix}{name}.'))
  return fields


def _library_file(filename: str) -> bool:
  """Whether `filename` is Python's or an installed package's, not the user's."""
  if filename.startswith('<'):
    return True
  libraries = {sysconfig.get_path(name) for name in ('stdlib', 'purelib', 'platlib')}
  path = os.path.realpath(filename)
  return any(path.startswith(os.path.realpath(lib) + os.sep) for lib in libraries)


def _shown(filename: str) -> str:
  relative = os.path.relpath(filename)
  return filename if relative.startswith('..') else relative


def _raised_in_config_file(error: BaseException, argument: str) -> str | None:
  """'Type: message (line N)' when `error` comes from running the config file."""
  path = os.path.realpath(argument.split(':', 1)[0])
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    frames = traceback.extract_tb(error.__traceback__)
    text = _message(error)
    if isinstance(error, SyntaxError) and error.filename:
      frames.append(traceback.FrameSummary(error.filename, error.lineno, 'compile'))
      text = error.msg
    if any(os.path.realpath(f.filename) == path for f in frames):
      where = ([f for f in frames if not _library_file(f.filename)] or frames)[-1]
      if os.path.realpath(where.filename) == path:
        return f'{type(error).__name__}: {text} (line {where.lineno})'
      return f'{type(error).__name__}: {text} ({_shown(where.filename)}, line {where.lineno})'
    error = error.__cause__ or error.__context__
  return None


def _unknown_field(argv: list[str], argument: str) -> str | None:
  """'unknown config field ...' for the first --config.FIELD the config lacks."""
  try:
    fields = _fields(_load_config(argument))
  except Exception:  # noqa: BLE001 -- the caller reports the original error
    return None
  for arg in _flag_arguments(argv):
    if match := re.match(r'--?(no)?config\.([^=]*)', arg):
      field = match[2]
      if field not in fields:
        close = difflib.get_close_matches(field, fields, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        return (
          f'unknown config field {field!r}{hint}: check the name against {argument}'
        )
  return None


def _flag_error(error: Exception, argv: list[str]) -> str:
  """One line for a mistake in the flags or in the --config file."""
  argument = _config_argument(argv)
  if argument is not None and (raised := _raised_in_config_file(error, argument)):
    return f'cannot load the --config file {argument}: {raised}'
  if isinstance(error, flags.Error):
    return f'{_message(error)} (see --helpshort)'
  if argument is None:
    return f'{type(error).__name__}: {_message(error)}'
  if isinstance(error, (AttributeError, KeyError)) and (
    unknown := _unknown_field(argv, argument)
  ):
    return unknown
  if isinstance(error, OSError):  # A missing or unreadable config file.
    reason = str(error).strip().splitlines()[-1].strip()
    return f'cannot load the --config file {argument}: {reason}'
  return f'cannot load the --config file {argument}: {type(error).__name__}: {_message(error)}'


def _help(argv: list[str]) -> None:
  """For --help, --helpshort, --helpfull: the flags, the config's fields, exit 0.

  absl's own help flags exit 1 and cannot show a config given after them.
  """
  asked = set()
  for argument in _flag_arguments(argv):
    name, _, value = argument.lstrip('-').partition('=')
    if argument.startswith('-') and value.lower() not in ('false', '0'):
      asked.add(name)
  if not asked & {'help', '?', 'helpshort', 'helpfull'}:
    return
  argument = _config_argument(argv)
  fields = {}
  if argument is not None:
    try:
      fields = _fields(_load_config(argument))
    except Exception as e:  # noqa: BLE001 -- a config file that fails to load
      _fail(_flag_error(e, argv), 2)
  full = 'helpfull' in asked
  try:
    app.usage(shorthelp=not full, writeto_stdout=True)
    if argument is None:
      print("With --config=configs/NAME.py, --help lists that config's fields too.")
    else:
      print(f'Config fields of {argument} (override with --config.FIELD=VALUE):')
      for name, value in fields.items():
        if not isinstance(value, ml_collections.ConfigDict) or not value:
          print(f'  {name} = {value!r}')
    if not full:
      print('\nTry --helpfull to get a list of all flags.')
    sys.stdout.flush()
  except BrokenPipeError:  # `main.py --help | head` stopped reading.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  sys.exit(0)


def _check_mode_fits_config(mode: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a sweep or benchmark config that another mode would misread."""
  kinds = [field for field in _MODE_FIELDS if field in config]
  if mode in ('eval', 'predict') or not kinds or mode in kinds:
    return
  path = config_flags.get_config_filename(flags.FLAGS['config'])
  kind = kinds[0]
  if mode == 'train':
    _fail(
      f'{path} is a {kind} config (it has a {kind!r} field), which --mode=train '
      f'would ignore: add --mode={kind}',
      2,
    )
  _fail(
    f'{path} is a {kind} config (it has a {kind!r} field), not a {mode} config: '
    f'use --mode={kind}, or a {mode} config such as configs/{mode}.py',
    2,
  )


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with every mistake in flags or config files as one line."""
  _help(argv)
  try:
    remaining = flags.FLAGS(argv)
    if _CONFIG.value is not None:
      _usable(_CONFIG.value)  # A config file that failed to load raises only now.
  except BrokenPipeError:
    raise
  except Exception as e:  # noqa: BLE001 -- flags, overrides, config files
    _fail(_flag_error(e, argv), 2)
  if _CONFIG.value is not None:
    _check_mode_fits_config(_MODE.value, _CONFIG.value)
  return remaining


def _dispatch(mode: str) -> None:
  """Runs `mode`; its module is imported here, only when it runs."""
  config = _CONFIG.value
  if mode == 'eval':
    from mlp.modes import eval as eval_mode

    eval_mode.run(config, _WORKDIR.value)
  elif mode == 'predict':
    from mlp.modes import predict

    sys.exit(predict.run(_WORKDIR.value, _IMAGES.value or '', _JSON.value))
  elif config is None:
    raise UserError(f'--mode={mode} needs --config=configs/NAME.py')
  elif mode == 'train':
    from mlp.modes import train

    summary = train.run(config, _WORKDIR.value, restart=_RESTART.value)
    if summary['diverged']:
      raise UserError(
        f'training diverged (loss {summary["final_loss"]}) after {summary["steps"]} '
        f'steps: lower --config.learning_rate (now {config.learning_rate:g})'
      )
  elif mode == 'sweep':
    from mlp.modes import sweep

    sweep.run(config, _WORKDIR.value, restart=_RESTART.value)
  elif mode == 'benchmark':
    from mlp.modes import benchmark

    benchmark.run(config, _WORKDIR.value)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(
      f'unexpected arguments: {" ".join(argv[1:])} (flags look like --name=value)', 2
    )
  try:
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
  except UserError as e:
    _fail(str(e))


if __name__ == '__main__':
  # The TPU probe's "Unable to initialize backend" line is noise on CPU/GPU.
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
  app.run(main, flags_parser=_parse_flags)
