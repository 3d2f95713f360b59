"""The command line's flag handling (mlp/cli.py through main.py): --help, config
file mistakes, mode and config mismatches.

Every `main.py` case here ends before training starts, most before JAX is
imported; the functions of mlp/cli.py are also tested in this process.
"""

import subprocess
import sys

import ml_collections
import pytest
from absl import flags

from mlp import cli
from tests.conftest import REPO, child_env, run_main


def only_error(result: subprocess.CompletedProcess) -> str:
  """The one line on stderr, checked to be an `Error:` line from a flags mistake."""
  assert result.returncode == 2, result.stderr
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('Error: '), result.stderr
  return lines[0]


@pytest.mark.parametrize(
  'args, expected',
  [
    (
      ['--config=configs/default.py', '--config.hiden_size=500'],
      "Error: unknown config field 'hiden_size' (did you mean 'hidden_size'?): "
      'check the name against configs/default.py',
    ),
    (
      ['--mode=sweep', '--config=configs/sweep.py', '--config.sweep.hiden_size=(1,)'],
      "Error: unknown config field 'sweep.hiden_size' (did you mean "
      "'sweep.hidden_size'?): check the name against configs/sweep.py",
    ),
    (
      ['--config=configs/default.py', '--config.no_such_field=1'],
      "Error: unknown config field 'no_such_field': check the name against "
      'configs/default.py',
    ),
  ],
)
def test_unknown_override_is_one_line_with_a_suggestion(tmp_path, args, expected):
  result = run_main(*args, f'--workdir={tmp_path}')
  assert only_error(result) == expected


BROKEN_CONFIG = """from configs import default


def get_config():
  config = default.get_config()
  {typo}
  return config
"""


@pytest.mark.parametrize(
  'typo, error',
  [
    ('config.hidden_size = config.hiden_size', 'AttributeError'),
    ("config.hidden_size = {'a': 1}['b']", 'KeyError'),
    ('config.hidden_size = hiden_size', 'NameError'),
    ('config.hidden_size = int("abc")', 'ValueError'),
    ('config.hidden_size = (', 'SyntaxError'),
  ],
)
def test_typo_inside_a_config_file_names_the_file_and_line(tmp_path, typo, error):
  config = tmp_path / 'typo.py'
  config.write_text(BROKEN_CONFIG.format(typo=typo))
  line = only_error(run_main(f'--config={config}', f'--workdir={tmp_path / "w"}'))
  assert line.startswith(f'Error: cannot load the --config file {config}: {error}: ')
  assert line.endswith('(line 6)') and 'unknown config field' not in line


def test_missing_config_file_is_named(tmp_path):
  line = only_error(run_main('--config=configs/missing.py', f'--workdir={tmp_path}'))
  assert 'configs/missing.py' in line and 'No such file' in line


@pytest.mark.parametrize(
  'config, mode, expected',
  [
    ('sweep', None, 'add --mode=sweep'),
    ('sweep', 'train', 'add --mode=sweep'),
    ('benchmark', None, 'add --mode=benchmark'),
    ('benchmark', 'sweep', 'use --mode=benchmark'),
    ('sweep', 'benchmark', 'use --mode=sweep'),
  ],
)
def test_a_sweep_or_benchmark_config_needs_its_mode(tmp_path, config, mode, expected):
  args = [f'--config=configs/{config}.py', f'--workdir={tmp_path}']
  line = only_error(run_main(*args, *([f'--mode={mode}'] if mode else [])))
  assert line.startswith(f'Error: configs/{config}.py is a {config} config')
  assert expected in line


@pytest.mark.parametrize(
  'args, expected',
  [
    (['--config=configs/test.py'], 'Error: --workdir=DIR is required'),
    (['--workdir=runs/x'], 'Error: --mode=train needs --config=configs/NAME.py'),
    (
      ['--mode=sweep', '--workdir=runs/x'],
      'Error: --mode=sweep needs --config=configs/NAME.py',
    ),
  ],
)
def test_a_missing_flag_is_a_flag_error(args, expected):
  assert only_error(run_main(*args)).startswith(expected)


@pytest.mark.parametrize('mode', ['eval', 'predict'])
def test_eval_and_predict_accept_any_config(tmp_path, mode):
  result = run_main(
    f'--mode={mode}', '--config=configs/sweep.py', f'--workdir={tmp_path}'
  )
  # It fails later (exit 1: no trained model), not as a refused flag (exit 2).
  assert result.returncode == 1 and 'is a sweep config' not in result.stderr


def imported_modules(stderr: str) -> set[str]:
  """The modules that `python -X importtime` reported importing."""
  return {
    line.rsplit('|', 1)[1].strip()
    for line in stderr.splitlines()
    if line.startswith('import time:') and line.count('|') == 2
  }


def test_help_exits_0_without_importing_jax():
  result = subprocess.run(
    [sys.executable, '-X', 'importtime', 'main.py', '--help'],
    cwd=REPO,
    capture_output=True,
    text=True,
    env=child_env(),
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  assert '--workdir' in result.stdout and '--helpfull' in result.stdout
  modules = imported_modules(result.stderr)
  assert 'absl.app' in modules  # -X importtime did report
  assert not {m for m in modules if m.split('.')[0] in ('jax', 'jaxlib')}


@pytest.mark.parametrize(
  'args',
  [
    ['--help', '--config=configs/default.py'],
    ['--config=configs/default.py', '--help'],
    ['--config', 'configs/default.py', '--helpshort'],
  ],
)
def test_help_with_a_config_lists_its_fields(args):
  result = run_main(*args)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  heading = (
    'Config fields of configs/default.py (override with --config.FIELD=VALUE; '
    'a field given twice takes the last value):'
  )
  assert heading in lines
  fields = lines[lines.index(heading) + 1 :]
  # Each field with its meaning and range (the table's) or its comment.
  assert any(
    line.startswith('  hidden_size = 300 ')
    and line.endswith('# H, hidden units; an integer >= 1')
    for line in fields
  )
  assert any(
    line.startswith("  dataset = 'mnist' ") and "'fashion_mnist'" in line
    for line in fields
  )


def test_help_flattens_nested_config_fields():
  result = run_main('--helpfull', '--config=configs/sweep.py')
  assert result.returncode == 0, result.stderr
  assert (
    '  sweep.hidden_size = (100, 200, 300)  # values of hidden_size searched; () = '
    'not swept' in result.stdout.splitlines()
  )
  assert '--verbosity' in result.stdout  # --helpfull: absl's flags too


def test_help_with_a_broken_config_is_an_error(tmp_path):
  config = tmp_path / 'typo.py'
  config.write_text(BROKEN_CONFIG.format(typo='config.hidden_size = hiden_size'))
  line = only_error(run_main('--help', f'--config={config}'))
  assert 'NameError' in line and '(line 6)' in line


# mlp/cli.py's functions, in this process.


class FakeConfigParser:
  """Stands for `flags.FLAGS['config'].parser`: one config, whatever the file."""

  def __init__(self, config: object):
    self.config = config

  def parse(self, argument: str) -> object:
    del argument
    return self.config


def sweep_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'hidden_size': 100,
      'write_plots': True,
      'sweep': {'hidden_size': (100, 300), 'learning_rate': (0.1,)},
      'empty': {},
    }
  )


def test_fields_flattens_nested_configs():
  flat = cli.fields(sweep_config())
  assert list(flat) == [
    'empty',
    'hidden_size',
    'sweep',
    'sweep.hidden_size',
    'sweep.learning_rate',
    'write_plots',
  ]
  assert flat == {
    'hidden_size': 100,
    'write_plots': True,
    'sweep': sweep_config().sweep,
    'sweep.hidden_size': (100, 300),
    'sweep.learning_rate': (0.1,),
    'empty': ml_collections.ConfigDict(),
  }


@pytest.mark.parametrize(
  'override, expected',
  [
    (
      '--config.hiden_size=1',
      "unknown config field 'hiden_size' (did you mean 'hidden_size'?): "
      'check the name against c.py',
    ),
    (
      '--config.sweep.learning_rat=(1,)',
      "unknown config field 'sweep.learning_rat' (did you mean "
      "'sweep.learning_rate'?): check the name against c.py",
    ),
    (
      '--noconfig.write_plot',
      "unknown config field 'write_plot' (did you mean 'write_plots'?): "
      'check the name against c.py',
    ),
    ('--config.zzz=1', "unknown config field 'zzz': check the name against c.py"),
    ('--config.sweep.hidden_size=(1,)', None),
  ],
)
def test_unknown_field_suggests_the_closest_name(override, expected):
  argv = ['main.py', '--config=c.py', override]
  parser = FakeConfigParser(sweep_config())
  assert cli.unknown_field(argv, 'c.py', parser) == expected


def test_unknown_field_is_none_when_the_config_does_not_load():
  argv = ['main.py', '--config=c.py', '--config.zzz=1']
  assert cli.unknown_field(argv, 'c.py', FakeConfigParser(5)) is None


@pytest.mark.parametrize(
  'argv, expected',
  [
    (['main.py'], None),
    (['main.py', '--config=a.py', '--config', 'b.py'], 'b.py'),
    (['main.py', '-config=a.py:x'], 'a.py:x'),
    (['main.py', '--config'], None),
    (['main.py', '--config.hidden_size=3'], None),
    (['main.py', '--', '--config=a.py'], None),
  ],
)
def test_config_argument_is_the_last_one_before_double_dash(argv, expected):
  assert cli.config_argument(argv) == expected


@pytest.mark.parametrize(
  'args, asked',
  [
    (['--help'], True),
    (['-?'], True),
    (['--helpfull=true'], True),
    (['--help=false'], False),
    (['--helpshort=0'], False),
    (['--', '--help'], False),
    (['--workdir=help'], False),
  ],
)
def test_help_asked(args, asked):
  assert cli.help_asked(['main.py', *args]) is asked


def test_message_unwraps_and_keeps_one_line():
  wrapped = flags.IllegalFlagValueError(ValueError('bad\n  value\n'))
  assert cli.message(wrapped) == 'bad value'
  assert cli.message(KeyError('b')) == "'b'"
  assert cli.message(KeyError('a\nb')) == 'a b'


def test_usable_refuses_what_is_not_a_config():
  with pytest.raises(TypeError, match='get_config\\(\\) returned int'):
    cli.usable(5)


@pytest.mark.parametrize(
  'mode, expected',
  [
    ('sweep', None),
    ('eval', None),
    ('predict', None),
    ('train', 'which --mode=train would ignore: add --mode=sweep'),
    ('benchmark', 'not a benchmark config: use --mode=sweep'),
  ],
)
def test_mode_mismatch(mode, expected):
  line = cli.mode_mismatch(mode, sweep_config(), 'c.py')
  if expected is None:
    assert line is None
  else:
    assert line.startswith("c.py is a sweep config (it has a 'sweep' field)")
    assert expected in line


def test_print_help_lists_the_fields_after_the_usage(capsys):
  def usage(**kwargs):
    print(f'usage {kwargs}')

  argv = ['main.py', '--helpfull', '--config=c.py']
  assert cli.print_help(argv, FakeConfigParser(sweep_config()), usage) is None
  assert capsys.readouterr().out.splitlines() == [
    "usage {'shorthelp': False, 'writeto_stdout': True}",
    'Config fields of c.py (override with --config.FIELD=VALUE; a field given twice '
    'takes the last value):',
    '  empty = {}',
    '',  # the repr of an empty ConfigDict ends in a newline
    # Each field's meaning and range from the table (c.py has no comments).
    '  hidden_size = 100               # H, hidden units; an integer >= 1',
    '  sweep.hidden_size = (100, 300)  # values of hidden_size searched; () = not swept',
    '  sweep.learning_rate = (0.1,)    # values of learning_rate searched; () = not swept',
    '  write_plots = True',
  ]


def test_field_docs_come_from_the_table_and_the_config_files_comments(tmp_path):
  configs = tmp_path / 'configs'
  configs.mkdir()
  (configs / '__init__.py').write_text('')
  (configs / 'base.py').write_text(
    'def get_config():\n'
    '  config.dataset = "mnist"  # which images\n'
    '  config.data_dir = ""  # overridden below\n'
    "  config.learning_rate = 0.1  # not the table's words\n"
  )
  (configs / 'mine.py').write_text(
    'from configs import base\n'
    'def get_config():\n'
    '  config.data_dir = "/x"  # where the files are\n'
    '  config.extra = ConfigDict({\n'
    '    "steps": 4,  # timed steps\n'
    '  })\n'
    '  # A comment on a line of its own belongs to no field.\n'
    '  config.search = "grid"\n'
  )
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(str(tmp_path))
    patch.delitem(sys.modules, 'configs', raising=False)
    docs = cli.field_docs(f'{configs / "mine.py"}:variant')
  assert docs['dataset'] == 'which images'  # from the file it imports
  assert docs['data_dir'] == 'where the files are'  # its own comment wins
  assert docs['extra.steps'] == 'timed steps'  # a key of a dict literal
  assert 'search' not in docs
  # The table's meaning wins over a comment, with the table's range.
  assert docs['learning_rate'] == 'initial step size; a finite number > 0'
  assert docs['optimizer'].endswith('; one of sgd, momentum, nesterov, adam, adamw')
  assert docs['seed'].endswith('an integer between 0 and 2147483647')


def test_print_help_returns_the_error_of_a_config_that_fails_to_load(capsys):
  argv = ['main.py', '--help', '--config=c.py']
  line = cli.print_help(argv, FakeConfigParser(5), print)
  assert line == (
    'cannot load the --config file c.py: TypeError: '
    'get_config() returned int, not a ConfigDict: end it with `return config`'
  )
  assert capsys.readouterr().out == ''
