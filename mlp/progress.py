"""Progress of long work: done/total, rate, and time left.

On a terminal, `Progress.log` redraws one live line (`\\r`): a bar, the
percentage, done/total, the rate, the time left and the caller's message.
Elsewhere (a file, a pipe, CI) it writes one plain absl log line per call, so
logs stay greppable.
"""

import math
import shutil
import sys
import time
from typing import TextIO

from absl import logging

_BAR_WIDTH = 20


def format_seconds(seconds: float) -> str:
  """`75.2` -> `'1m15s'`; `3.14` -> `'3.1s'`."""
  if not math.isfinite(seconds):  # no rate yet
    return '?'
  if seconds < 60:
    return f'{seconds:.1f}s'
  minutes, seconds = divmod(int(round(seconds)), 60)
  if minutes < 60:
    return f'{minutes}m{seconds:02d}s'
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m'


def format_count(count: float) -> str:
  """`950` -> `'950'`; `123456` -> `'123k'`; `2.5e6` -> `'2.5M'`."""
  for scale, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(count) >= scale:
      return f'{count / scale:.3g}{suffix}'
  return f'{count:.0f}'


def plural(count: int, noun: str) -> str:
  """`1 model`, `36 models`: a count and its noun (made plural with an s)."""
  return f'{count} {noun}' if count == 1 else f'{count} {noun}s'


def subset(size: int, total: int) -> str:
  """What an accuracy over `size` of `total` images is on: `'5k subset'`, `'all 55k'`.

  Args:
    size: the images evaluated (`train_eval_size`, at most `total`).
    total: the images of the split.
  """
  if size < total:
    return f'{format_count(size)} subset'
  return f'all {format_count(total)}'


class Progress:
  """Measures the rate of `unit`s of work since `start_time` and estimates time left.

  Callers may set `done` and shift `start_time` (e.g. to leave compile time out
  of the rate) directly.

  Attributes:
    total: units of work in all.
    unit: what a unit is, e.g. 'examples'.
    start_time: `time.perf_counter()` at the start of the work.
    done: units done so far.
  """

  def __init__(self, total: int, unit: str = 'examples', stream: TextIO | None = None):
    """Starts the clock.

    Args:
      total: units of work in all.
      unit: what a unit is, shown after numbers.
      stream: where the live bar goes; `None` is `sys.stderr` at each call. The
        bar is drawn only when the stream is a terminal.
    """
    self.total = total
    self.unit = unit
    self.start_time = time.perf_counter()
    self.done = 0
    self._stream = stream
    self._bar_open = False

  def elapsed(self) -> float:
    return time.perf_counter() - self.start_time

  def _rate_and_left(self, done: int) -> tuple[float, float]:
    elapsed = self.elapsed()
    rate = done / elapsed if elapsed > 0 else float('inf')
    left = (self.total - done) / rate if rate > 0 else float('inf')
    return rate, max(left, 0.0)

  def update(self, done: int) -> str:
    """Records `done` units so far; returns `'rate units/s, T left'`."""
    self.done = done
    rate, left = self._rate_and_left(done)
    return f'{rate:,.0f} {self.unit}/s, {format_seconds(left)} left'

  def _output(self) -> TextIO:
    return self._stream if self._stream is not None else sys.stderr

  def is_live(self) -> bool:
    """Whether `log` draws a live bar (the output stream is a terminal)."""
    isatty = getattr(self._output(), 'isatty', None)
    try:
      return bool(isatty and isatty())
    except ValueError:  # a closed stream
      return False

  def log(self, done: int, message: str, *args) -> None:
    """Reports `message % args` with the rate and the time left.

    A live bar on a terminal, else one absl log line.
    """
    if not self.is_live():
      logging.info(message + ' | %s', *args, self.update(done))
      return
    self.done = done
    rate, left = self._rate_and_left(done)
    fraction = min(max(done / self.total, 0.0), 1.0) if self.total > 0 else 1.0
    filled = int(round(fraction * _BAR_WIDTH))
    line = (
      f'[{"#" * filled}{"." * (_BAR_WIDTH - filled)}] {fraction:4.0%} '
      f'{format_count(done)}/{format_count(self.total)} {self.unit} '
      f'{format_count(rate)}/s {format_seconds(left)} left | '
      f'{message % args if args else message}'
    )
    width = shutil.get_terminal_size().columns
    stream = self._output()
    stream.write('\r' + line[: max(width - 1, 20)] + '\x1b[K')
    stream.flush()
    self._bar_open = True
    if done >= self.total:
      self.close()

  def close(self) -> None:
    """Ends the live bar's line (if one is drawn), so later output starts afresh."""
    if self._bar_open:
      stream = self._output()
      stream.write('\n')
      stream.flush()
      self._bar_open = False
