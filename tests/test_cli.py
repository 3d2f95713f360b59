"""main.py's flag handling: --help, config file mistakes, mode and config mismatches.

Every case here ends before training starts, most before JAX is imported.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_main(*args: str, python_options: tuple = ()) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, *python_options, 'main.py', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
    timeout=120,
  )


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
  result = run_main('--help', python_options=('-X', 'importtime'))
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
  heading = 'Config fields of configs/default.py (override with --config.FIELD=VALUE):'
  assert heading in lines
  fields = lines[lines.index(heading) + 1 :]
  assert '  hidden_size = 300' in fields and "  dataset = 'mnist'" in fields


def test_help_flattens_nested_config_fields():
  result = run_main('--helpfull', '--config=configs/sweep.py')
  assert result.returncode == 0, result.stderr
  assert '  sweep.hidden_size = (100, 200, 300)' in result.stdout.splitlines()
  assert '--verbosity' in result.stdout  # --helpfull: absl's flags too


def test_help_with_a_broken_config_is_an_error(tmp_path):
  config = tmp_path / 'typo.py'
  config.write_text(BROKEN_CONFIG.format(typo='config.hidden_size = hiden_size'))
  line = only_error(run_main('--help', f'--config={config}'))
  assert 'NameError' in line and '(line 6)' in line
