"""How log lines look: `HH:MM:SS message` for a person, absl's prefix on request.

absl's own prefix (`I1203 05:38:50.344652 139703318154112 train.py:75] `) says
the level, the date, the microsecond, the thread and the source line: useful
when debugging, noise in a run's output. `main.py` keeps it with `--verbose`
or when any of absl's logging flags (`--verbosity`, `--log_dir`, ...) is
given, and otherwise installs `PlainFormatter`. Nothing here reads flags: the
caller says which flags were given.
"""

import logging
import time

from absl import flags
from absl import logging as absl_logging

# Levels above INFO keep a word, so a warning still reads as one.
_LEVEL_WORDS = {logging.WARNING: 'Warning: ', logging.ERROR: 'Error: '}


class PlainFormatter(logging.Formatter):
  """`HH:MM:SS message` (local time); warnings and errors say so after the time."""

  def format(self, record: logging.LogRecord) -> str:
    clock = time.strftime('%H:%M:%S', time.localtime(record.created))
    level = _LEVEL_WORDS.get(record.levelno, '')
    if record.levelno >= logging.CRITICAL:
      level = 'Fatal: '
    return f'{clock} {level}{super().format(record)}'


def absl_flags_given(flag_values: flags.FlagValues) -> list[str]:
  """The names of absl's logging flags set on the command line.

  Args:
    flag_values: the parsed flags (`flags.FLAGS`).
  """
  absl_flags = flag_values.flags_by_module_dict().get('absl.logging', [])
  return [flag.name for flag in absl_flags if flag.present]


def use_plain_format() -> None:
  """Makes absl's handler write `PlainFormatter` lines from now on."""
  absl_logging.get_absl_handler().setFormatter(PlainFormatter())
