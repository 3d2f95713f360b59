"""Progress: plain log lines when not on a terminal, a live `\\r` bar on one."""

import io
import logging as std_logging
import re

import pytest

from mlp import progress as progress_lib


class FakeTerminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_format_seconds():
  assert progress_lib.format_seconds(3.14) == '3.1s'
  assert progress_lib.format_seconds(75.2) == '1m15s'
  assert progress_lib.format_seconds(7325) == '2h02m'
  assert progress_lib.format_seconds(float('inf')) == '?'


def test_format_count():
  assert progress_lib.format_count(950) == '950'
  assert progress_lib.format_count(123456) == '123k'
  assert progress_lib.format_count(2.5e6) == '2.5M'


def test_not_a_terminal_logs_plain_lines(caplog):
  stream = io.StringIO()
  progress = progress_lib.Progress(1000, stream=stream)
  progress.start_time -= 1.0  # a known, non-zero elapsed time
  with caplog.at_level(std_logging.INFO):
    progress.log(250, 'step %d/%d', 5, 20)
    progress.log(500, 'step %d/%d', 10, 20)
    progress.close()
  assert stream.getvalue() == ''  # nothing drawn
  lines = [r.getMessage() for r in caplog.records if 'step' in r.getMessage()]
  assert len(lines) == 2
  assert lines[0].startswith('step 5/20 | ') and 'examples/s' in lines[0]
  assert 'left' in lines[1] and '\r' not in lines[1]
  assert progress.done == 500


def test_bar_fits_the_terminal_width(monkeypatch):
  monkeypatch.setenv('COLUMNS', '60')
  stream = FakeTerminal()
  progress_lib.Progress(1000, stream=stream).log(10, 'a long message ' * 10)
  assert len(stream.getvalue().strip('\r').split('\x1b[K')[0]) < 60


def test_terminal_gets_a_live_bar(caplog, monkeypatch):
  monkeypatch.setenv('COLUMNS', '200')
  stream = FakeTerminal()
  progress = progress_lib.Progress(1000, unit='model-examples', stream=stream)
  progress.start_time -= 1.0
  with caplog.at_level(std_logging.INFO):
    progress.log(250, 'step %d/%d', 5, 20)
    progress.log(500, 'halfway')
  text = stream.getvalue()
  assert not [r for r in caplog.records if 'step' in r.getMessage()]  # no log lines
  assert text.count('\r') == 2 and '\n' not in text  # one line, redrawn
  last = text.rsplit('\r', 1)[1]
  assert '50%' in last and '500/1k model-examples' in last
  assert '/s' in last and 'left' in last and last.split('\x1b[K')[0].endswith('halfway')
  assert '25%' in text and 'step 5/20' in text
  progress.close()
  assert stream.getvalue().endswith('\n')
  progress.close()  # idempotent
  assert stream.getvalue().count('\n') == 1


@pytest.mark.parametrize('total', [0, 10])
def test_bar_ends_its_line_when_done(total):
  stream = FakeTerminal()
  progress = progress_lib.Progress(total, stream=stream)
  progress.log(total, 'done')
  assert '100%' in stream.getvalue() and stream.getvalue().endswith('\n')


def test_subset_and_plural_say_what_a_number_is():
  assert progress_lib.subset(5000, 55000) == '5k subset'
  assert progress_lib.subset(500, 55000) == '500 subset'
  assert progress_lib.subset(55000, 55000) == 'all 55k'
  assert progress_lib.plural(1, 'model') == '1 model'
  assert progress_lib.plural(36, 'model') == '36 models'


def test_plain_log_lines_are_the_time_then_the_message():
  from mlp import logs

  record = std_logging.LogRecord(
    'x', std_logging.INFO, 'f.py', 1, 'rate %d/s', (5,), None
  )
  record.created = 0.0
  line = logs.PlainFormatter().format(record)
  assert re.fullmatch(r'\d\d:\d\d:\d\d rate 5/s', line)
  record.levelno = std_logging.WARNING
  assert logs.PlainFormatter().format(record).endswith(' Warning: rate 5/s')


def test_absl_logging_flags_on_the_command_line_are_found(monkeypatch):
  from absl import flags

  from mlp import logs

  assert logs.absl_flags_given(flags.FLAGS) == []
  monkeypatch.setattr(flags.FLAGS['verbosity'], 'present', 1)
  assert logs.absl_flags_given(flags.FLAGS) == ['verbosity']
