"""Ctrl-C and SIGTERM: stop at a point the same command resumes from.

`install` replaces Python's SIGINT handler (and adds one for SIGTERM, which
cluster schedulers send before they kill a job). A signal raises `Interrupted`
at once, except inside `deferred()`, the training loop's segments: there it is
noted, and the loop saves a checkpoint at the end of the segment in progress
and then raises `Interrupted` itself (`raise_if_pending`). A second signal does
not wait. `main.py` turns `Interrupted` into one `Error:` line and exit code
128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

import contextlib
import os
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending: int | None = None
_deferring = False
position: str | None = None  # where training stands; the loop updates it
finished = False  # training is over: the run writes its results


class Interrupted(BaseException):  # noqa: N818 -- like KeyboardInterrupt, not an Exception
  """The process was asked to stop by signal `signum`."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum

  @property
  def exit_code(self) -> int:
    return 128 + self.signum

  def message(self, kept: str) -> str:
    """The `Error:` line: where the run stood, then `kept` (what it keeps,
    e.g. `checkpoint.describe_newest`)."""
    if finished:
      where = 'after training finished, while writing the results'
    elif position is None:
      where = 'before training started'
    else:
      where = f'at {position}'
    return f'Interrupted {where}; {kept}'


def training_done() -> None:
  """Marks the end of training: a signal from now on interrupts the writing
  of the results, not training (the message says so).

  For tests, `MLP_STOP_AFTER_TRAINING=1` stops the process here (SIGSTOP), so
  that a signal can be sent at this known point.
  """
  global finished
  finished = True
  if os.environ.get('MLP_STOP_AFTER_TRAINING') == '1':
    os.kill(os.getpid(), signal.SIGSTOP)


def _handler(signum, frame):
  global _pending
  if _deferring and _pending is None:
    _pending = signum
    return
  raise Interrupted(signum)


def install() -> None:
  """Handles SIGINT and SIGTERM as described above (main thread only)."""
  for signum in SIGNALS:
    signal.signal(signum, _handler)


@contextlib.contextmanager
def deferred():
  """Signals inside wait for `raise_if_pending` (or for the block's end)."""
  global _deferring
  _deferring = True
  try:
    yield
  finally:
    _deferring = False
  raise_if_pending()


def pending() -> bool:
  """Whether a signal waits to be acted on."""
  return _pending is not None


def raise_if_pending() -> None:
  global _pending
  if _pending is not None:
    signum, _pending = _pending, None
    raise Interrupted(signum)
