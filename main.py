"""Command line of the MLP trainer: flags only; the logic lives in `mlp/`.

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --mode=eval --workdir=runs/default
  python main.py --mode=sweep --config=configs/sweep.py --workdir=runs/sweep
  python main.py --mode=benchmark --config=configs/benchmark.py --workdir=runs/bench
  python main.py --mode=predict --workdir=runs/default --images='my_digits/*.png'

Every mistake a user can fix ends in one line on stderr, `Error: ...`, and a
non-zero exit code (2 for flags and config files, 1 otherwise); a diverged
training run exits 1 too.
"""

import logging as std_logging
import sys
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from mlp import benchmark, compile_cache, distributed, predict, run, sweep
from mlp.errors import UserError

MODES = ('train', 'eval', 'sweep', 'predict', 'benchmark')

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


def _one_line(error: BaseException) -> str:
  return ' '.join(line.strip() for line in str(error).splitlines() if line.strip())


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with every mistake in flags or config files as one line."""
  try:
    argv = flags.FLAGS(argv)
    if _CONFIG.value is not None:
      _CONFIG.value.keys()  # A config file that failed to load raises only now.
    return argv
  except flags.Error as e:
    _fail(f'{_one_line(e)} (see --helpshort)', 2)
  except (AttributeError, KeyError) as e:  # --config.FIELD that the config lacks
    field = _one_line(e).strip('"\'')
    _fail(f'unknown config field {field!r}: check the name against the config file', 2)
  except BrokenPipeError:
    raise
  except OSError as e:  # A missing or unreadable config file.
    reason = str(e).strip().splitlines()[-1].strip()
    _fail(f'cannot load the --config file: {reason}', 2)
  except Exception as e:  # noqa: BLE001 -- a config file that fails to import
    _fail(f'cannot load the --config file: {type(e).__name__}: {_one_line(e)}', 2)


def _dispatch(mode: str) -> None:
  config = _CONFIG.value
  if mode == 'eval':
    run.evaluate_workdir(config, _WORKDIR.value)
    return
  if mode == 'predict':
    sys.exit(predict.run_predict(_WORKDIR.value, _IMAGES.value or '', _JSON.value))
  if config is None:
    raise UserError(f'--mode={mode} needs --config=configs/NAME.py')
  if mode == 'train':
    summary = run.train_and_evaluate(config, _WORKDIR.value, restart=_RESTART.value)
    if summary['diverged']:
      raise UserError(
        f'training diverged (loss {summary["final_loss"]}) after {summary["steps"]} steps: '
        f'lower --config.learning_rate (now {config.learning_rate:g})'
      )
  elif mode == 'sweep':
    sweep.run_sweep(config, _WORKDIR.value, restart=_RESTART.value)
  elif mode == 'benchmark':
    benchmark.run_benchmark(config, _WORKDIR.value)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(
      f'unexpected arguments: {" ".join(argv[1:])} (flags look like --name=value)', 2
    )
  try:
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
