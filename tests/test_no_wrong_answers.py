"""Nothing wrong is ever reported as right: one test per class of failure, on
real processes and real files (the exit code, the one `Error:` line, the
files left behind).

The classes: NaN params, stale params, the empty workdir, overflow,
underflow, repeated overrides, incomplete configs, cost checks, messages,
repair and tracebacks. Most of these failures happen before JAX is imported
(`mlp.search.preflight`), so most processes here take a fraction of a second; the
few that need a trained workdir copy the suite's `trained_workdir` or build
one by hand (a `config.json` and a `params.npz`).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sweep as sweep_config
from configs import test as test_config
from mlp import checkpoint, cli, hparams, interrupt
from mlp import workdir as workdir_lib
from mlp.errors import UserError
from tests.conftest import (
  REPO,
  child_env,
  error_lines,
  expected_scalars,
  read_scalars,
  start_main,
)

TEST = ['--config=configs/test.py', '--config.write_plots=False']
SWEEP = ['--mode=sweep', '--config=configs/sweep.py', '--config.write_plots=False']


def run_all(*commands: list[str], env=None, cwd: Path = REPO) -> list:
  """Runs `main.py` once per command, all at once; their completed processes."""
  processes = [
    subprocess.Popen(
      [sys.executable, str(REPO / 'main.py'), *args],
      cwd=cwd,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=child_env(env),
    )
    for args in commands
  ]
  results = []
  for args, process in zip(commands, processes, strict=True):
    out, err = process.communicate(timeout=300)
    results.append(subprocess.CompletedProcess(args, process.returncode, out, err))
  return results


def one_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
  """The one `Error:` line of a process that exited with `code`, no traceback."""
  assert result.returncode == code, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  (line,) = error_lines(result.stderr)
  return line


def snapshot(directory: Path) -> dict[str, bytes]:
  return {
    str(p.relative_to(directory)): p.read_bytes()
    for p in sorted(directory.rglob('*'))
    if p.is_file()
  }


def fake_train_workdir(path: Path, params: dict, config: dict | None = None) -> Path:
  """A train workdir built by hand: `config.json` and `params.npz`."""
  path.mkdir(parents=True)
  config = test_config.get_config().to_dict() if config is None else config
  (path / 'config.json').write_text(json.dumps(config))
  np.savez(path / 'params.npz', **params)
  return path


def random_params(hidden_size: int = 16) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
    'W1': rng.normal(0, 0.01, (784, hidden_size)).astype(np.float32),
    'b1': np.zeros(hidden_size, np.float32),
    'W2': rng.normal(0, 0.01, (hidden_size, 10)).astype(np.float32),
    'b2': np.zeros(10, np.float32),
  }


# -- NaN params ---------------------------------------------------------------


def test_nan_params_are_refused_and_no_json_holds_nan(tmp_path):
  """Eval and predict of hand-made NaN params (a real diverged run's are
  refused in the next test)."""
  from mlp.modes import eval as eval_mode
  from mlp.modes import predict

  params = random_params()
  params['W2'][3, 4] = np.nan
  params['b1'][0] = np.inf
  workdir = fake_train_workdir(tmp_path / 'diverged', params)
  before = snapshot(workdir)
  expected = (
    f'the params in {workdir}/params.npz are not finite (W2, b1 hold NaN or '
    'infinity): the run that wrote them diverged; train again with --restart and '
    'smaller values (its summary.json and its log name the field to lower)'
  )
  with pytest.raises(UserError) as evaluated:
    eval_mode.run(None, str(workdir))
  with pytest.raises(UserError) as predicted:
    predict.run(str(workdir), 'docs/samples/*.jpg', True)
  assert str(evaluated.value) == str(predicted.value) == expected
  assert snapshot(workdir) == before

  # Every JSON file is strict: null and a flag instead of NaN and Infinity.
  summary = tmp_path / 'summary.json'
  value = {'final_loss': float('nan'), 'history': {'loss': [1.0, float('-inf')]}}
  workdir_lib.write_json(summary, value)
  workdir_lib.append_jsonl(tmp_path / 'metrics.jsonl', {'step': 2, 'loss': np.inf})

  def refuse(constant):
    raise ValueError(f'{constant} in strict JSON')

  strict = json.loads(summary.read_text(), parse_constant=refuse)
  assert strict == {
    'final_loss': None,
    'history': {'loss': [1.0, None]},
    'non_finite': {'final_loss': 'nan', 'history.loss': '-inf'},
  }
  line = (tmp_path / 'metrics.jsonl').read_text()
  assert json.loads(line, parse_constant=refuse) == {
    'step': 2,
    'loss': None,
    'non_finite': {'loss': 'inf'},
  }
  restored = workdir_lib.read_json(summary)  # this package's readers get them back
  assert np.isnan(restored['final_loss']) and restored['history']['loss'][1] == -np.inf
  assert workdir_lib.loads_json(line)['loss'] == np.inf


# -- Stale params and a workdir's own files -----------------------------------


@pytest.mark.xdist_group('trained_workdir')
def test_a_run_leaves_nothing_stale_and_deletes_only_what_it_wrote(
  trained_workdir, tmp_path
):
  """A sweep's outputs, named by the workdir's manifest, beside a user's files:
  a refused train leaves all of it; `--restart` deletes the sweep's files and
  nothing else, and the run's diverged model is refused by predict.
  (`trained_workdir` first: its programs are in the compilation cache.)"""
  workdir = tmp_path / 'w'
  (workdir / 'checkpoints').mkdir(parents=True)
  sweep_files = {
    'config.json': json.dumps(sweep_config.get_config().to_dict()).encode(),
    'summary.json': b'{"num_models": 8}',
    'results.csv': b'hidden_size,val_accuracy\n16,0.8054\n',
    'checkpoints/ckpt_000000001.npz': b'a sweep checkpoint',
  }
  np.savez(workdir / 'best_params.npz', **random_params())
  for name, content in sweep_files.items():
    (workdir / name).write_bytes(content)
  (workdir / workdir_lib.MANIFEST).write_text(
    ''.join(f'{name}\n' for name in [*sweep_files, 'best_params.npz'])
  )
  users = {'notes.txt': b'mine', 'checkpoints/mine.txt': b'also mine'}
  for name, content in users.items():
    (workdir / name).write_bytes(content)
  foreign = tmp_path / 'foreign'  # a config.json that this tool did not write
  foreign.mkdir()
  (foreign / 'config.json').write_text('{"my": "own"}')
  before = snapshot(workdir)

  (overflow,) = run_all(
    [*TEST, f'--workdir={workdir}', '--restart', '--config.num_iters=3000000000']
  )
  assert 'num_iters=3000000000 is invalid' in one_error(overflow)
  assert snapshot(workdir) == before  # validated before anything was written
  from mlp.search import single

  config = test_config.get_config().to_dict()
  with pytest.raises(UserError) as refused:
    checkpoint.prepare_resume(foreign, config, restart=True, outputs=single.OUTPUTS)
  assert str(refused.value) == (
    f'workdir {foreign} holds config.json, which this tool did not write (its '
    '.manifest does not name them): move them away, or pass another --workdir'
  )
  assert (foreign / 'config.json').read_text() == '{"my": "own"}'

  # The corrected command starts over (and diverges: lambda 1e30).
  (diverged,) = run_all(
    [*TEST, f'--workdir={workdir}', '--restart', '--config.l2_reg=1e30']
  )
  line = one_error(diverged)
  assert line.startswith('Error: training diverged (loss ') and line.endswith(
    'after 20 steps: lower --config.l2_reg (now 1e+30)'
  )
  left = snapshot(workdir)
  for name, content in users.items():
    assert left[name] == content
  for name in ('best_params.npz', 'results.csv'):
    assert name not in left  # eval and predict cannot find the sweep's model
  summary = workdir_lib.read_json(workdir / 'summary.json')  # this run's
  assert summary['diverged'] and np.isfinite(summary['start_loss'])
  assert json.loads(left['config.json'])['l2_reg'] == 1e30
  written = workdir_lib.written(workdir)
  assert set(written) <= set(left) and 'notes.txt' not in written
  assert not any(name.startswith('checkpoints/mine') for name in written)

  assert summary['steps'] < 60  # it stopped at the first evaluation

  # A diverged model is no answer: predict refuses its params (as in the
  # previous test, where the `Error:` line's text is checked).
  from mlp.modes import predict

  with pytest.raises(UserError, match='the run that wrote them diverged'):
    predict.run(str(workdir), 'docs/samples/*.jpg', True)


# -- The empty workdir ----------------------------------------------------------


def test_an_empty_or_blank_workdir_is_refused(tmp_path):
  """In a directory holding a user's files, `--workdir=` would mean that
  directory: refused, for every mode, with nothing touched."""
  (tmp_path / 'config.json').write_text('{"mine": true}')
  (tmp_path / 'summary.json').write_text('{"mine": true}')
  before = snapshot(tmp_path)
  config = f'--config={REPO}/configs/test.py'
  results = run_all(
    [config, '--workdir=', '--restart'],
    [config, '--workdir=  ', '--restart'],
    ['--mode=sweep', f'--config={REPO}/configs/sweep.py', '--workdir=\t'],
    ['--mode=eval', '--workdir='],
    ['--mode=predict', '--workdir= ', '--images=x.png'],
    cwd=tmp_path,
  )
  for result in results:
    line = one_error(result, code=2)
    assert line.endswith(
      '--workdir is empty: pass a directory for the run, e.g. --workdir=runs/NAME '
      '(see --helpshort)'
    ), line
  assert snapshot(tmp_path) == before  # no .lock, no .manifest either
  with pytest.raises(UserError, match="--workdir=' ' is empty"):
    workdir_lib.prepare(' ')


# -- Overflow and underflow -----------------------------------------------------


@pytest.mark.parametrize(
  'args, expected',
  [
    (
      [*TEST, '--config.num_iters=3000000000'],
      'config field num_iters=3000000000 is invalid: it does not fit the int32 the '
      'compiled program holds it in (at most 2147483647)',
    ),
    (
      [*TEST, '--config.lr_schedule=cosine', '--config.warmup_iters=2147483648'],
      'config field warmup_iters=2147483648 is invalid: it does not fit the int32',
    ),
    (
      [*SWEEP, '--config.search=halving', '--config.max_iters=2147483648'],
      'config field max_iters=2147483648 is invalid: it does not fit the int32',
    ),
    (
      [*TEST, '--config.l2_reg=1e39'],
      'config field l2_reg=1e+39 is invalid: it rounds to infinity in float32',
    ),
    (
      [*TEST, '--config.learning_rate=1e-50'],
      'config field learning_rate=1e-50 is invalid: it rounds to 0 (or loses its '
      'precision) in float32, whose smallest normal number is 1.175e-38',
    ),
    (
      [*SWEEP, '--config.search=random', '--config.num_samples=4']
      + ['--config.sweep.learning_rate=("log", 1e-300, 1e300)'],
      'config.sweep.learning_rate holds 1e-300, which is invalid: it rounds to 0',
    ),
    (
      [*SWEEP, '--config.search=random', '--config.num_samples=4']
      + ['--config.sweep.learning_rate=("linear", 1e-3, 1e999)'],
      'config.sweep.learning_rate holds inf, which is invalid: expected a finite '
      'number > 0',
    ),
    (
      [*SWEEP, '--config.search=pbt', '--config.pbt_perturb=1e300'],
      'config field pbt_perturb=1e+300 is invalid: it rounds to infinity in float32',
    ),
  ],
  ids=lambda value: value if isinstance(value, str) else None,
)
def test_numbers_the_program_cannot_hold_are_refused_before_writing(
  tmp_path, args, expected
):
  """Overflow (int32 widths, float32 range) and underflow (to 0 in float32),
  in a config, a random search's range or a PBT perturbation: one line, and
  no workdir, so that the corrected command is not refused."""
  (result,) = run_all([*args, f'--workdir={tmp_path / "w"}'])
  assert expected in one_error(result)
  assert not (tmp_path / 'w').exists()


def test_pbt_perturbations_stay_in_the_checked_range():
  """PBT's perturbed values are clipped to the swept range, whose bounds are
  checked like config values: no perturbation can round to 0 or infinity."""
  from mlp.search import pbt

  explore = pbt.Explore(('learning_rate',), (1e-3,), (1.0,), 1e30, 0.0, 0.5)
  values = {'learning_rate': np.asarray([1e-3, 1.0], np.float32)}
  perturbed = []
  for seed in range(4):
    _, new = pbt.exploit_explore(
      jax.random.key(seed),
      np.asarray([0.1, 0.9], np.float32),
      np.asarray([True, True]),
      values,
      explore,
    )
    perturbed += np.asarray(new['learning_rate']).tolist()
  assert all(hparams.FIELDS['learning_rate'].problem(v) is None for v in perturbed)
  assert min(perturbed) >= np.float32(1e-3) and max(perturbed) <= 1.0


# -- Repeated overrides -----------------------------------------------------------


def test_a_repeated_override_takes_the_last_value(tmp_path):
  """Tuples included (absl would add their values); the error names the last."""
  workdir = f'--workdir={tmp_path / "w"}'
  swept, scalar, ambiguous = run_all(
    [
      *SWEEP,
      workdir,
      '--config.sweep.hidden_size=(0,)',
      '--config.sweep.hidden_size=(-1,)',
    ],
    [*TEST, workdir, '--config.num_iters=0', '--config.num_iters=-1'],
    [*TEST, workdir, '--config.num_iters', '5', '--config.num_iters=6'],
  )
  assert one_error(swept).startswith('Error: config.sweep.hidden_size holds -1,')
  assert one_error(scalar).startswith('Error: config field num_iters=-1 is invalid')
  assert one_error(ambiguous, code=2) == (
    'Error: --config.num_iters is given more than once, once without "=": give it '
    'once, or each time as --config.num_iters=VALUE (see --helpshort)'
  )
  assert not (tmp_path / 'w').exists()
  argv = ['main.py', '--config.a=(1,)', '--mode=sweep', '--config.a=(2,)', '--', 'x']
  assert cli.last_overrides(argv) == [
    'main.py',
    '--mode=sweep',
    '--config.a=(2,)',
    '--',
    'x',
  ]


# -- Incomplete configs -----------------------------------------------------------


def test_an_incomplete_config_is_one_error(tmp_path):
  own = tmp_path / 'own.py'  # a user's get_config() that skips configs/default.py
  own.write_text(
    'import ml_collections\n\n\ndef get_config():\n'
    '  config = ml_collections.ConfigDict()\n  config.learning_rate = 0.1\n'
    '  return config\n'
  )
  config = test_config.get_config().to_dict()
  del config['data_source']
  workdir = fake_train_workdir(tmp_path / 'old', random_params(), config)
  (trained,) = run_all([f'--config={own}', f'--workdir={tmp_path / "w"}'])
  assert one_error(trained) == (
    'Error: the config lacks the field(s) lr_decay, l2_reg, init_std, seed, num_iters '
    'and 29 more: start its get_config() from the defaults (from configs import '
    'default; config = default.get_config()) or set them'
  )
  assert not (tmp_path / 'w').exists()
  from mlp.modes import eval as eval_mode

  with pytest.raises(UserError) as evaluated:
    eval_mode.run(None, str(workdir))
  assert str(evaluated.value) == (
    f'{workdir}/config.json lacks the field(s) data_source: pass '
    '--config=configs/NAME.py, a config that starts from configs/default.py'
  )


# -- Cost checks --------------------------------------------------------------------


def test_a_search_too_large_to_build_is_refused_at_once(tmp_path):
  workdir = f'--workdir={tmp_path / "w"}'
  seeds = tuple(range(101))
  rates = tuple(round(0.01 * (i + 1), 2) for i in range(100))
  drawn, gridded = run_all(
    [*SWEEP, workdir, '--config.search=random', '--config.num_samples=1000000'],
    [
      *SWEEP,
      workdir,
      f'--config.sweep.seed={seeds}',
      f'--config.sweep.learning_rate={rates}',
    ]
    + ['--config.sweep.hidden_size=()', '--config.sweep.l2_reg=()'],
  )
  assert one_error(drawn) == (
    f'Error: the sweep has 1,000,000 models, more than the {hparams.MAX_MODELS:,} one '
    'sweep may hold (building their configs alone would take minutes): lower '
    '--config.num_samples'
  )
  assert one_error(gridded).startswith('Error: the sweep has 10,100 models, more than')
  assert one_error(gridded).endswith(': sweep fewer values')
  assert not (tmp_path / 'w').exists()
  hparams.check_num_models(hparams.MAX_MODELS, 'fix')  # the limit itself is allowed
  with pytest.raises(UserError, match='more than the'):
    hparams.check_num_models(hparams.MAX_MODELS + 1, 'fix')


# -- Messages -------------------------------------------------------------------------


def test_messages_say_what_happened_and_name_the_field(tmp_path, monkeypatch):
  """Each before JAX is imported; a run diverged by l2_reg is the previous
  test's, a Ctrl-C after training the next one's."""
  none = tmp_path / 'none.py'
  none.write_text('def get_config():\n  return None\n')
  loading = tmp_path / 'loading.py'  # Ctrl-C while the config file loads
  loading.write_text(
    'import os\nimport signal\n\nfrom configs import default\n\n\n'
    'def get_config():\n  os.kill(os.getpid(), signal.SIGINT)\n'
    '  return default.get_config()\n'
  )
  workdir = tmp_path / 'w'
  returned_none, interrupted, no_processes = run_all(
    [f'--config={none}', f'--workdir={workdir}'],
    [f'--config={loading}', f'--workdir={workdir}'],
    [*TEST, f'--workdir={workdir}', '--num_processes=0', '--process_id=0'],
  )
  assert one_error(returned_none, code=2) == (
    f'Error: cannot load the --config file {none}: TypeError: get_config() returned '
    'None, not a ConfigDict: end it with `return config`'
  )
  assert one_error(interrupted, code=130) == (
    'Error: Interrupted while loading the flags and the --config file'
  )
  assert one_error(no_processes, code=2) == (
    'Error: flag --num_processes=0: --num_processes must be at least 1 (the '
    'processes of the run, this one included) (see --helpshort)'
  )
  assert not workdir.exists()
  config = test_config.get_config()
  assert hparams.divergence_fix(config, False) == 'lower --config.init_std (now 0.01)'
  assert (
    hparams.divergence_fix(config, True) == 'lower --config.learning_rate (now 0.3)'
  )
  monkeypatch.setattr(interrupt, 'position', None)
  monkeypatch.setattr(interrupt, 'finished', False)
  assert (
    interrupt.Interrupted(2).message('kept')
    == 'Interrupted before training started; kept'
  )


# -- Repair ------------------------------------------------------------------------------


@pytest.mark.xdist_group('trained_workdir')
def test_damage_is_repaired(trained_workdir, tmp_path, caplog):
  """A damaged TensorBoard event file gets its lost steps back from
  `metrics.jsonl` when the run resumes (here: a Ctrl-C right after training,
  which says so); a damaged compilation-cache entry is compiled again."""
  workdir = tmp_path / 'w'
  shutil.copytree(trained_workdir[0], workdir)
  (events,) = (workdir / 'tensorboard').glob('events.out.tfevents.*')
  damaged = bytearray(events.read_bytes())
  damaged[len(damaged) // 2] ^= 0xFF  # TensorBoard stops reading there
  events.write_bytes(bytes(damaged))
  rows = [
    json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]
  assert read_scalars(workdir / 'tensorboard') != expected_scalars(rows)

  process = start_main(
    '--config=configs/test.py',
    f'--workdir={workdir}',
    env={'MLP_STOP_AFTER_TRAINING': '1'},
  )
  _, status = os.waitpid(process.pid, os.WUNTRACED)
  assert os.WIFSTOPPED(status), status
  os.kill(process.pid, signal.SIGINT)
  os.kill(process.pid, signal.SIGCONT)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 130 and 'Traceback' not in stderr, stderr[-3000:]
  assert error_lines(stderr) == [
    'Error: Interrupted after training finished, while writing the results; the '
    f'newest checkpoint, {workdir}/checkpoints/ckpt_000000003.npz (step 60), is '
    'intact: the same command resumes'
  ]
  assert read_scalars(workdir / 'tensorboard') == expected_scalars(rows)

  # The compilation cache of this session (`compilation_cache` in conftest).
  def damaged_cache_probe(x):
    return x * 3 + 1

  jax.jit(damaged_cache_probe)(jnp.arange(3.0)).block_until_ready()
  directory = Path(jax.config.jax_compilation_cache_dir)
  (entry,) = directory.glob('jit_damaged_cache_probe-*-cache')
  entry.write_bytes(b'damaged' * 8)
  jax.clear_caches()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    result = jax.jit(damaged_cache_probe)(jnp.arange(3.0))
  assert result.tolist() == [1.0, 4.0, 7.0]
  assert not [w for w in caught if 'compilation cache' in str(w.message)]
  assert f'Compilation cache entry {entry.name.removesuffix("-cache")}' in caplog.text
  assert entry.read_bytes() != b'damaged' * 8
  caplog.clear()
  jax.clear_caches()  # the entry written again loads, with no warning
  jax.jit(damaged_cache_probe)(jnp.arange(3.0)).block_until_ready()
  assert 'Compilation cache entry' not in caplog.text


# -- Tracebacks ------------------------------------------------------------------------


def test_a_closed_stdout_is_one_line(tmp_path):
  """`main.py --mode=predict ... | head -1`, made deterministic: the reader is
  gone before the first line is written."""
  workdir = fake_train_workdir(tmp_path / 'w', random_params())
  read_end, write_end = os.pipe()
  os.close(read_end)
  try:
    result = subprocess.run(
      [sys.executable, 'main.py', '--mode=predict', f'--workdir={workdir}']
      + ['--images=docs/samples/*.jpg'],
      cwd=REPO,
      stdout=write_end,
      stderr=subprocess.PIPE,
      text=True,
      env=child_env(),
      timeout=300,
    )
  finally:
    os.close(write_end)
  assert one_error(result) == (
    'Error: the output was cut short: its reader closed standard output early'
  )
