"""Progress lines for long work: done/total, rate, and time left."""

import time

from absl import logging


def format_seconds(seconds: float) -> str:
  """`75.2` -> `'1m15s'`; `3.14` -> `'3.1s'`."""
  if seconds < 60:
    return f'{seconds:.1f}s'
  minutes, seconds = divmod(int(round(seconds)), 60)
  if minutes < 60:
    return f'{minutes}m{seconds:02d}s'
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m'


class Progress:
  """Measures the rate of `unit`s of work since `start()` and estimates time left."""

  def __init__(self, total: int, unit: str = 'examples'):
    self.total = total
    self.unit = unit
    self.start_time = time.perf_counter()
    self.done = 0

  def elapsed(self) -> float:
    return time.perf_counter() - self.start_time

  def update(self, done: int) -> str:
    """Records `done` units so far; returns `'rate units/s, T left'`."""
    self.done = done
    elapsed = self.elapsed()
    rate = done / elapsed if elapsed > 0 else float('inf')
    left = (self.total - done) / rate if rate > 0 else float('inf')
    return f'{rate:,.0f} {self.unit}/s, {format_seconds(left)} left'

  def log(self, done: int, message: str, *args) -> None:
    """Logs `message % args` followed by the rate and the time left."""
    logging.info(message + ' | %s', *args, self.update(done))
