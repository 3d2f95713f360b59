"""Every shell command in README.md's ```sh blocks works as written.

`COMMANDS` maps each command, exactly as the README writes it, to how this
file runs it; a README command missing from it (or an entry the README no
longer has) fails `test_every_readme_command_is_covered`. The README says to
`source .venv/bin/activate` first, so `python` is this interpreter and
`tensorboard` the one beside it.

How each command runs, cheaply:
- `main.py` commands run in this process (`run_in_process`: main.py's own
  flag parsing and `main`), so they do not import JAX again; long ones get
  configs/test.py's sizes (`TINY`) and a temporary workdir.
- `runs/default`, the workdir `make run` writes, is the `trained_workdir`
  fixture (configs/test.py instead of configs/default.py); `make run` itself
  is checked to run main.py on configs/default.py (`make -n run`).
- The course's sweep is the `sweep_workdir` fixture, the benchmark the
  `benchmark_workdir` fixture: the README's command plus
  `tests.conftest.SWEEP`'s (`BENCHMARK`'s) tiny overrides, checked equal here.
- Not run: `make test` (it is this suite; `make -n test` is checked) and
  `tensorboard --logdir` (a server that runs until stopped; the executable is
  checked to be installed).
"""

import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from absl import logging as absl_logging

from tests.conftest import BENCHMARK, REPO, SWEEP

# configs/test.py's sizes: a few seconds of training at most.
TINY = (
  '--config.hidden_size=16',
  '--config.batch_size=32',
  '--config.num_iters=60',
  '--config.eval_every=20',
  '--config.train_eval_size=500',
  '--config.write_plots=False',
)
# The adaptive searches as tests/test_search.py's HALVING and PBT runs (the
# same programs, so each compiles once in the suite): a 12-model grid of
# `SWEEP`'s sizes halved at 20 and 60 steps; 4 members of H 8, exploiting every
# 20 steps.
TINY_SWEEP = (*SWEEP[2:], '--config.num_samples=0', '--config.sweep.lr_decay=()')
TINY_HALVING = (
  *(a for a in TINY_SWEEP if not a.startswith('--config.sweep.learning_rate=')),
  '--config.sweep.learning_rate=(0.1, 0.3, 1e6)',
  '--config.eta=3',
  '--config.min_iters=20',
  '--config.max_iters=60',
)
TINY_PBT = (
  *(
    a
    for a in TINY_SWEEP
    if not a.startswith(
      ('--config.sweep.learning_rate=', '--config.sweep.hidden_size=')
    )
  ),
  '--config.sweep.hidden_size=(8,)',
  '--config.sweep.learning_rate=(0.05, 0.5)',
  '--config.pbt_interval=20',
)
# Every README command -> the test that runs it (and how, in its docstring).
COMMANDS = {
  'make run': 'test_make_targets',
  'make test': 'test_make_targets',
  'source .venv/bin/activate': 'test_make_targets',
  'python main.py --help --config=configs/default.py': 'test_help',
  'python main.py --mode=eval --workdir=runs/default': 'test_on_runs_default',
  "python main.py --mode=predict --workdir=runs/default --images='docs/samples/*.jpg'": (
    'test_on_runs_default'
  ),
  'python main.py --config=configs/best_plain.py --workdir=runs/best_plain': (
    'test_best_plain'
  ),
  "python main.py --mode=predict --workdir=runs/best_plain --images='docs/samples/*.jpg'": (
    'test_best_plain'
  ),
  'python main.py --mode=sweep --config=configs/sweep.py --workdir=runs/sweep': (
    'test_sweep'
  ),
  'python main.py --mode=sweep --config=configs/halving.py --workdir=runs/halving': (
    'test_adaptive_searches'
  ),
  'python main.py --mode=sweep --config=configs/pbt.py --workdir=runs/pbt': (
    'test_adaptive_searches'
  ),
  'python main.py --mode=benchmark --config=configs/benchmark.py --workdir=runs/benchmark': (
    'test_benchmark'
  ),
  'python main.py --mode=benchmark --config=configs/benchmark.py:full --workdir=runs/benchmark': (
    'test_benchmark'
  ),
  'tensorboard --logdir runs/': 'test_make_targets',
  'python main.py --mode=serve --workdir=runs/default': (
    'test_serve.py::test_the_readmes_serve_and_curl_commands_work_as_written'
  ),
  "curl -s --data-binary @docs/samples/clean_7.jpg -H 'Content-Type: image/jpeg' "
  'http://127.0.0.1:8000/api/predict': (
    'test_serve.py::test_the_readmes_serve_and_curl_commands_work_as_written'
  ),
  # A command another test file runs names it as 'FILE::TEST'.
  'python examples/cnn.py --workdir=runs/cnn --tiny': (
    'test_examples.py::test_the_cnn_example_searches_with_hyperband'
  ),
}


def readme_commands() -> list[str]:
  """The commands of README.md's ```sh blocks, comments dropped, one a line."""
  commands, in_block = [], False
  for line in (REPO / 'README.md').read_text().splitlines():
    fence = line.strip()
    if fence.startswith('```'):
      in_block = fence == '```sh' if not in_block else False
      continue
    if in_block and (words := shlex.split(line, comments=True)):
      commands.append(shlex.join(words))
  return commands


def normalized(command: str) -> str:
  return shlex.join(shlex.split(command, comments=True))


def args_of(command: str) -> list[str]:
  """The `main.py` arguments of a README `python main.py ...` command."""
  words = shlex.split(command)
  assert words[:2] == ['python', 'main.py'], command
  return words[2:]


def with_workdir(args: list[str], workdir: Path) -> list[str]:
  """`args` with `--workdir=runs/NAME` pointed at `workdir`."""
  return [f'--workdir={workdir}' if a.startswith('--workdir=') else a for a in args]


def _forget_config_overrides() -> None:
  """Deletes the `--config.FIELD` flags a parse defined: each holds the config
  it was parsed into, and a tuple field's flag is not defined again."""
  for name in [n for n in flags.FLAGS if n.startswith('config.')]:
    delattr(flags.FLAGS, name)


@contextlib.contextmanager
def _main_state(argv: list[str]):
  """main.py's process-wide settings (flags, `sys.argv`, signal handlers, the
  log format) for `argv`, put back afterwards for the rest of the suite."""
  import main  # noqa: F401 -- defines main.py's flags once, in this process

  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  handler = absl_logging.get_absl_handler()
  formatter = handler.python_handler.formatter
  # Unparsing the flags sets absl's logger to WARNING: its level comes back.
  absl_level = absl_logging.get_absl_logger().level
  flags.FLAGS.unparse_flags()
  _forget_config_overrides()
  saved_argv = sys.argv
  sys.argv = argv  # ml_collections reads the --config.FIELD overrides from it
  try:
    yield sys.modules['main']
  finally:
    sys.argv = saved_argv
    flags.FLAGS.unparse_flags()
    _forget_config_overrides()
    flags.FLAGS.mark_as_parsed()
    for signum, previous in handlers.items():
      signal.signal(signum, previous)
    handler.setFormatter(formatter)
    absl_logging.get_absl_logger().setLevel(absl_level)


def run_in_process(args: list[str], capsys) -> tuple[int, str, str]:
  """`python main.py ARGS` in this process: its exit code, stdout and stderr."""
  capsys.readouterr()
  argv = ['main.py', *args]
  with _main_state(argv) as main:
    try:
      main.main(main._parse_flags(argv))
      code = 0
    except SystemExit as e:
      code = e.code or 0
  out, err = capsys.readouterr()
  return code, out, err


def test_every_readme_command_is_covered():
  found = readme_commands()
  assert found, 'no ```sh blocks found in README.md'
  missing = [c for c in found if c not in {normalized(k) for k in COMMANDS}]
  assert not missing, f'README commands no test runs (add them to COMMANDS): {missing}'
  stale = [k for k in COMMANDS if normalized(k) not in found]
  assert not stale, f'COMMANDS the README no longer has: {stale}'
  for test in COMMANDS.values():
    file, _, name = test.rpartition('::')
    if file:  # a test of another file: it must be defined there
      assert f'def {name}(' in (Path(__file__).parent / file).read_text(), test
    else:
      assert name in globals(), test


def test_make_targets():
  """`make run` trains configs/default.py (main.py training itself runs in the
  `trained_workdir` fixture); `make test` runs this suite; the README's
  activation and `tensorboard` are the interpreter's environment."""
  run = subprocess.run(['make', '-n', 'run'], cwd=REPO, capture_output=True, text=True)
  assert 'main.py --config=configs/default.py --workdir=runs/default' in run.stdout
  test = subprocess.run(
    ['make', '-n', 'test'], cwd=REPO, capture_output=True, text=True
  )
  assert '-m pytest' in test.stdout and 'tests' in test.stdout.split()
  bin_dir = Path(sys.executable).parent
  if bin_dir.resolve() == (REPO / '.venv' / 'bin').resolve():
    assert (bin_dir / 'activate').is_file()
  # `make install` installs tensorboard (requirements.txt), beside python.
  assert (bin_dir / 'tensorboard').is_file()
  assert re.search(r'^tensorboard==', (REPO / 'requirements.txt').read_text(), re.M)


def test_help(capsys):
  """Runs as written."""
  (command,) = [c for c in COMMANDS if COMMANDS[c] == 'test_help']
  code, out, _ = run_in_process(args_of(command), capsys)
  assert code == 0 and 'Config fields of configs/default.py' in out
  assert '# H, hidden units; an integer >= 1' in out


@pytest.mark.xdist_group('trained_workdir')
def test_on_runs_default(trained_workdir, mnist_loaded_once, capsys):
  """Eval and predict of `runs/default`: the `trained_workdir` fixture."""
  workdir, _ = trained_workdir
  evaluate, predict = [c for c in COMMANDS if COMMANDS[c] == 'test_on_runs_default']
  code, out, err = run_in_process(with_workdir(args_of(evaluate), workdir), capsys)
  assert code == 0, err
  summary = json.loads((workdir / 'summary.json').read_text())
  assert f'test_accuracy {summary["test_accuracy"]:.4f}' in out
  code, out, err = run_in_process(with_workdir(args_of(predict), workdir), capsys)
  assert code == 0, err
  samples = sorted(
    str(p.relative_to(REPO)) for p in (REPO / 'docs/samples').glob('*.jpg')
  )
  assert sorted(line.split('\t')[0] for line in out.splitlines()) == samples


def test_best_plain(tmp_path, mnist_loaded_once, capsys):
  """Trains configs/best_plain.py (its optimizer, schedule, sampling, init and
  dropout) at `TINY` sizes, then predicts with it."""
  train, predict = [c for c in COMMANDS if COMMANDS[c] == 'test_best_plain']
  code, out, err = run_in_process(
    [*with_workdir(args_of(train), tmp_path), *TINY], capsys
  )
  assert code == 0 and 'test_accuracy' in out, err
  code, out, err = run_in_process(with_workdir(args_of(predict), tmp_path), capsys)
  assert code == 0 and out.count('docs/samples/') == len(
    list(REPO.glob('docs/samples/*.jpg'))
  ), err


@pytest.mark.xdist_group('sweep_workdir')
def test_sweep(sweep_workdir):
  """The `sweep_workdir` fixture is the README's command with `SWEEP`'s tiny
  overrides."""
  (command,) = [c for c in COMMANDS if COMMANDS[c] == 'test_sweep']
  args = [a for a in args_of(command) if not a.startswith('--workdir=')]
  assert SWEEP[: len(args)] == args
  assert all(a.startswith('--config.') for a in SWEEP[len(args) :])
  _, result = sweep_workdir
  assert result.returncode == 0 and 'test_accuracy' in result.stdout


@pytest.mark.xdist_group('search')
def test_adaptive_searches(tmp_path, mnist_loaded_once, capsys):
  """Successive halving and PBT at the sizes of tests/test_search.py's runs
  (`TINY_HALVING`, `TINY_PBT`)."""
  halving, pbt = [c for c in COMMANDS if COMMANDS[c] == 'test_adaptive_searches']
  for command, tiny in ((halving, TINY_HALVING), (pbt, TINY_PBT)):
    workdir = tmp_path / Path(args_of(command)[-1]).name
    code, out, err = run_in_process(
      [*with_workdir(args_of(command), workdir), *tiny], capsys
    )
    assert code == 0 and 'test_accuracy' in out, (command, err)
    assert (workdir / 'report.md').is_file()


@pytest.mark.xdist_group('benchmark')
def test_benchmark(benchmark_workdir, tmp_path):
  """The `benchmark_workdir` fixture is the default's command with
  `BENCHMARK`'s tiny overrides. With them `:full` times the same rows, so it
  runs up to its parsed config: the variant loads and the overrides apply."""
  default, full = [c for c in COMMANDS if COMMANDS[c] == 'test_benchmark']
  args = [a for a in args_of(default) if not a.startswith('--workdir=')]
  assert BENCHMARK[: len(args)] == args
  assert all(a.startswith('--config.') for a in BENCHMARK[len(args) :])
  _, result = benchmark_workdir
  assert result.returncode == 0 and '| H | batch | models |' in result.stdout
  argv = ['main.py', *with_workdir(args_of(full), tmp_path), *BENCHMARK[2:]]
  with _main_state(argv) as main:
    main._parse_flags(argv)
    assert flags.FLAGS.config.benchmark.hidden_sizes == (16,)
    assert flags.FLAGS.config.benchmark.num_models == (1, 3)


def test_pip_install_pins_what_make_install_pins():
  """`pip install -e .` (pyproject.toml) installs the packages, at the same
  pins, that `make install` (requirements.txt) does."""
  import tomllib

  project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
  requirements = [
    line.strip()
    for line in (REPO / 'requirements.txt').read_text().splitlines()
    if line.strip() and not line.startswith('#')
  ]
  assert sorted(project['dependencies']) == sorted(requirements)
