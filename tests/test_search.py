"""--config.search=halving, hyperband and pbt: rung arithmetic, survivors,
exploit and explore, equality with a run alone and with one device, files, and
resume after a kill."""

import csv
import fcntl
import json
import os
import signal

import numpy as np
import pytest

from mlp import workdir as workdir_lib
from mlp.modes import sweep, train
from mlp.search import budgets, pbt, space
from tests.conftest import SWEEP, error_lines, run_main, start_main
from tests.test_mode_sweep import sweep_config

# With `pytest -n`, one worker runs this module: its searches run once.
pytestmark = pytest.mark.xdist_group('search')

# The tiny sweep's grid with a diverging learning rate added: 12 models in
# two shape groups; rungs at 20 and 60 steps (eta 3), so 4 models go on.
HALVING = {
  'search': 'halving',
  'eta': 3,
  'min_iters': 20,
  'max_iters': 60,
  'sweep.learning_rate': (0.1, 0.3, 1e6),
}
# Four members of H 8 (the tiny sweep's shapes), exploit and explore every 20 steps.
PBT = {
  'search': 'pbt',
  'pbt_interval': 20,
  'sweep.hidden_size': (8,),
  'sweep.learning_rate': (0.05, 0.5),
}


def command(changes: dict) -> list[str]:
  """`main.py SWEEP` with `changes` as flags. `SWEEP`'s own flag of each
  changed field is left out: a repeated tuple flag appends to the tuple."""
  names = {f'--config.{field}=' for field in changes}
  kept = [arg for arg in SWEEP if not any(arg.startswith(n) for n in names)]
  return [*kept, *(f'--config.{field}={value}' for field, value in changes.items())]


def test_rung_budgets():
  assert budgets.rungs(125, 2000, 4) == [125, 500, 2000]
  assert budgets.rungs(74, 2000, 3) == [74, 222, 667, 2000]
  assert budgets.rungs(20, 60, 3) == [20, 60]
  assert budgets.rungs(60, 60, 3) == [60]
  assert budgets.rung_sizes(128, 3, 4) == [128, 32, 8]
  assert budgets.rung_sizes(5, 4, 3) == [5, 1, 1, 1]


def test_hyperband_brackets_follow_li_et_al():
  # R = 81, eta 3: Table 1 of Li et al. (2017), resources in units of r_min.
  brackets = budgets.hyperband(1, 81, 3)
  assert [b.sizes for b in brackets] == [
    [81, 27, 9, 3, 1],
    [34, 11, 3, 1],
    [15, 5, 1],
    [8, 2],
    [5],
  ]
  assert [b.ends for b in brackets] == [
    [1, 3, 9, 27, 81],
    [3, 9, 27, 81],
    [9, 27, 81],
    [27, 81],
    [81],
  ]
  assert [b.first for b in brackets] == [0, 81, 115, 130, 138]


def test_survivors_are_the_top_k_diverged_first_ties_by_index():
  rng = np.random.default_rng(0)
  indices = rng.permutation(40) + 100
  accuracy = rng.choice([0.5, 0.6, 0.7, 0.8], 40)  # many ties
  diverged = rng.random(40) < 0.3
  accuracy[diverged.argmax()] = 0.99  # the best score, but diverged
  for keep in (1, 5, 12, 40):
    expected = sorted(
      (i for i, d in zip(indices, diverged, strict=True) if not d),
      key=lambda i: (-accuracy[list(indices).index(i)], i),
    )[:keep]
    assert budgets.survivors(indices, accuracy, diverged, keep) == sorted(expected)
  assert budgets.survivors([0, 1], [np.nan, 0.1], [False, False], 2) == [1]
  assert budgets.survivors([3, 4], [0.9, 0.9], [True, True], 1) == []


def run_search(changes: dict, workdir, mnist):
  """`sweep.run` of `sweep_config(**changes)` in this process, on the session's
  MNIST: the workdir and the summary."""
  from mlp import data as data_lib

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(data_lib, 'from_config', lambda config: mnist)
    return workdir, sweep.run(sweep_config(**changes), str(workdir))


@pytest.fixture(scope='module')
def halving_workdir(tmp_path_factory, mnist):
  return run_search(HALVING, tmp_path_factory.mktemp('halving'), mnist)


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_halving_keeps_the_top_third_and_never_a_diverged_model(halving_workdir):
  workdir, summary = halving_workdir
  assert summary['rungs'] == [20, 60] and summary['rung_sizes'] == [12, 4]
  assert summary['model_steps'] == 12 * 20 + 4 * 40
  rows = read_csv(workdir / 'results.csv')
  assert list(rows[0])[-3:] == ['rung', 'steps', 'picked']
  curves = {
    r['model']: r['curves']
    for r in map(
      workdir_lib.loads_json, (workdir / 'curves.jsonl').read_text().splitlines()
    )
  }
  # Rung 0: every model evaluated at step 20; the survivors are the top 4.
  ranked = sorted(
    curves,
    key=lambda m: (
      not np.isfinite(curves[m]['train_loss'][0]),
      -curves[m]['val_accuracy'][0],
      m,
    ),
  )
  survivors = sorted(m for m in curves if curves[m]['step'] == [20, 40, 60])
  assert survivors == sorted(ranked[:4])
  dropped = [m for m in curves if m not in survivors]
  assert all(curves[m]['step'] == [20] for m in dropped)
  diverged = [r for r in rows if r['diverged'] == 'True']
  assert len(diverged) == 4 and {r['learning_rate'] for r in diverged} == {'1000000.0'}
  assert all(r['rung'] == '1' and r['steps'] == '20' for r in diverged)
  # Rows rank by val accuracy, diverged last; the pick is the best finisher.
  accuracies = [float(r['val_accuracy']) for r in rows if r['diverged'] == 'False']
  assert accuracies == sorted(accuracies, reverse=True)
  (picked,) = [r for r in rows if r['picked'] == 'True']
  assert picked == next(r for r in rows if r['steps'] == '60')
  assert summary['best']['val_accuracy'] == float(picked['val_accuracy'])
  assert 'Picked (`picked` = yes): model' in (workdir / 'results.md').read_text()


def test_the_winner_equals_its_run_alone(halving_workdir, tmp_path, mnist_loaded_once):
  workdir, summary = halving_workdir
  best = summary['best']
  point = {f: best[f] for f in ('hidden_size', 'learning_rate', 'l2_reg')}
  config = space.model_config(sweep_config(**HALVING), point)
  config.write_plots = False
  alone = train.run(config, str(tmp_path))
  assert alone['val_accuracy'] == best['val_accuracy']
  alone_params = np.load(tmp_path / 'params.npz')
  for name, value in np.load(workdir / 'best_params.npz').items():
    np.testing.assert_allclose(value, alone_params[name], rtol=1e-5, atol=1e-6)


def test_halving_killed_in_a_later_rung_resumes_bitwise(halving_workdir, tmp_path):
  whole, _ = halving_workdir
  # Rung 0: per chunk of two (6 chunks), its evaluation at step 20, then its
  # record with its state for the next rung (the last chunk's record is the
  # rung's, with the survivors' gathered states): 12 checkpoints. The 13th is
  # the second rung's first chunk at step 40, trained from those states.
  args = [*command(HALVING), f'--workdir={tmp_path}']
  killed = run_main(*args, env={'MLP_KILL_AFTER_CHECKPOINT': '13'})
  assert killed.returncode == -signal.SIGKILL
  assert not (tmp_path / 'results.csv').exists()
  resumed = run_main(*args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert (
    'Resuming from' in resumed.stderr
    and '1 round(s) done, and 0 model(s) of the next' in resumed.stderr
  )
  assert 'model-examples/s' in resumed.stderr
  for name in ('results.csv', 'curves.jsonl'):
    assert (tmp_path / name).read_text() == (whole / name).read_text()
  for name, value in np.load(whole / 'best_params.npz').items():
    np.testing.assert_array_equal(np.load(tmp_path / 'best_params.npz')[name], value)


@pytest.mark.parametrize(
  'changes, expected',
  [
    ({'eta': 1}, 'eta=1'),
    ({'min_iters': 100}, 'min_iters=100'),
    ({'sweep.num_iters': (10, 20)}, 'num_iters cannot be swept'),
    ({'num_samples': -2}, 'num_samples'),
    ({'search': 'hyperband', 'num_samples': 5}, 'brackets set how many'),
    ({'search': 'pbt'}, 'hidden_size cannot take several values'),
    ({**PBT, 'pbt_explore': ('momentum',)}, "pbt_explore names 'momentum'"),
    ({**PBT, 'pbt_fraction': 0.9}, 'pbt_fraction=0.9'),
  ],
)
def test_halving_user_errors_leave_nothing_behind(tmp_path, changes, expected):
  from mlp.errors import UserError

  with pytest.raises(UserError, match=expected):
    sweep.run(sweep_config(**{**HALVING, **changes}), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


# H 8 only: the chunks of two reuse the halving tests' program.
HYPERBAND = {
  **HALVING,
  'search': 'hyperband',
  'sweep.hidden_size': (8,),
  'sweep.learning_rate': (0.1, 0.5),
}


@pytest.fixture(scope='module')
def hyperband_workdir(tmp_path_factory, mnist):
  return run_search(HYPERBAND, tmp_path_factory.mktemp('hyperband'), mnist)


def test_hyperband_runs_each_bracket_and_picks_the_best_finisher(hyperband_workdir):
  workdir, summary = hyperband_workdir
  # R = 3, eta 3: a bracket of 3 models (20 then 60 steps), then one of 2 (60).
  assert [b['rungs'] for b in summary['brackets']] == [[20, 60], [60]]
  assert [b['rung_sizes'] for b in summary['brackets']] == [[3, 1], [2]]
  assert summary['model_steps'] == 3 * 20 + 40 + 2 * 60
  # Programs of 2 models (bracket 0's first rung, bracket 1) and of 1 (its
  # second rung): each compiled once, whatever rung or bracket it serves.
  assert summary['programs_compiled'] == 2
  rows = read_csv(workdir / 'results.csv')
  assert len(rows) == 5 and list(rows[0])[-4:] == ['bracket', 'rung', 'steps', 'picked']
  finishers = [r for r in rows if r['steps'] == '60']
  assert len(finishers) == 3
  assert [r for r in rows if r['picked'] == 'True'] == finishers[:1]
  assert summary['best']['val_accuracy'] == float(finishers[0]['val_accuracy'])
  # Bracket 0's one survivor had the best val accuracy of its 3 at step 20.
  curves = {
    c['model']: c['curves']
    for c in map(json.loads, (workdir / 'curves.jsonl').read_text().splitlines())
  }
  at_20 = {m: curves[m]['val_accuracy'][0] for m in range(3)}
  survivors = [m for m in range(3) if curves[m]['step'] == [20, 40, 60]]
  assert survivors == [min(at_20, key=lambda m: (-at_20[m], m))]
  assert all(curves[m]['step'] == [20, 40, 60] for m in (3, 4))  # bracket 1


def test_exploit_copies_exactly_and_explore_stays_in_range():
  import jax

  n = 7
  values = {
    'learning_rate': np.geomspace(0.01, 1.0, n).astype(np.float32),
    'l2_reg': np.full(n, 1e-3, np.float32),
    'seed': np.arange(n, dtype=np.int32),
  }
  explore = pbt.Explore(
    fields=('learning_rate', 'l2_reg'),
    low=(0.01, 1e-4),
    high=(1.0, 1e-3),
    perturb=1.25,
    resample=0.5,
    fraction=0.3,  # of 7 members: 2
  )
  accuracy = np.array([0.5, 0.9, 0.3, 0.9, 0.7, 0.2, 0.95], np.float32)
  finite = np.array([True, True, True, True, False, True, True])
  top = {6, 1}  # 0.95, then 0.9 at the lower index
  for seed in range(20):
    source, new = pbt.exploit_explore(
      jax.random.key(seed), accuracy, finite, values, explore
    )
    # The two worst members: the diverged 4, then 5 (0.2).
    replaced = {4, 5}
    assert {m for m in range(n) if source[m] != m} == replaced
    assert all(source[m] in top for m in replaced)
    np.testing.assert_array_equal(new['seed'], values['seed'][source])  # copied
    kept = [m for m in range(n) if m not in replaced]
    for i, name in enumerate(explore.fields):
      np.testing.assert_array_equal(new[name][kept], values[name][kept])
      assert new[name].dtype == np.float32
      assert np.all(new[name] >= np.float32(explore.low[i]))
      assert np.all(new[name] <= np.float32(explore.high[i]))


@pytest.fixture(scope='module')
def pbt_workdir(tmp_path_factory, mnist):
  return run_search(PBT, tmp_path_factory.mktemp('pbt'), mnist)


def test_pbt_records_lineage_and_schedules(pbt_workdir):
  workdir, summary = pbt_workdir
  assert summary['intervals'] == [20, 40, 60]
  assert summary['model_steps'] == 4 * 60
  records = [json.loads(x) for x in (workdir / 'curves.jsonl').read_text().splitlines()]
  rows = read_csv(workdir / 'results.csv')
  assert len(records) == len(rows) == 4 and list(rows[0])[-2:] == ['copies', 'picked']
  for record in records:
    curves = record['curves']
    assert curves['step'] == [20, 40, 60]
    assert curves['copied_from'][0] == record['model']
    for name, low, high in (('learning_rate', 0.05, 0.5), ('l2_reg', 1e-4, 1e-2)):
      values = np.asarray(curves[f'hparams.{name}'], np.float32)
      assert np.all((values >= np.float32(low)) & (values <= np.float32(high)))
  # One member of four is replaced at each of the two exploits (one
  # evaluation an interval, so `copied_from` has one entry per interval).
  copies = [
    sum(c != record['model'] for c in record['curves']['copied_from'])
    for record in records
  ]
  assert sum(copies) == 2
  assert sorted(int(r['copies']) for r in rows) == sorted(copies)


@pytest.mark.parametrize('stop_after', [1, 2])
def test_pbt_stopped_between_intervals_resumes_bitwise(
  pbt_workdir, tmp_path, monkeypatch, mnist_loaded_once, stop_after
):
  """Stopped in this process at a known checkpoint, then the same call
  resumes: after the first interval's last evaluation (its exploit not yet
  recorded), or after its record (the exploit's state, and the copies'
  states gathered for the next interval)."""
  from mlp import checkpoint

  whole, _ = pbt_workdir
  save, saved = checkpoint.save, []

  def save_then_stop(*args, **kwargs):
    path = save(*args, **kwargs)
    saved.append(path)
    if len(saved) == stop_after:
      raise KeyboardInterrupt
    return path

  monkeypatch.setattr(checkpoint, 'save', save_then_stop)
  with pytest.raises(KeyboardInterrupt):
    sweep.run(sweep_config(**PBT), str(tmp_path))
  monkeypatch.setattr(checkpoint, 'save', save)
  assert not (tmp_path / 'results.csv').exists()
  summary = sweep.run(sweep_config(**PBT), str(tmp_path))
  assert summary['resumed']
  for name in ('results.csv', 'curves.jsonl'):
    assert (tmp_path / name).read_text() == (whole / name).read_text()
  for name, value in np.load(whole / 'best_params.npz').items():
    np.testing.assert_array_equal(np.load(tmp_path / 'best_params.npz')[name], value)


def test_search_plots(halving_workdir, pbt_workdir):
  from mlp import search_plots

  for workdir, _ in (halving_workdir, pbt_workdir):
    (path,) = search_plots.write_search_plots(workdir)
    assert path == workdir / 'plots' / 'search.png' and path.stat().st_size > 10_000


def test_tensorboard_shows_rungs_and_lineage(halving_workdir, pbt_workdir):
  """Each model's run: its curves (as curves.jsonl), and in its HParams
  session where it stopped (halving) or whose weights it took (PBT)."""
  pytest.importorskip('tensorboard', reason='tensorboard reads the events')
  from tests.conftest import (
    expected_scalars,
    read_hparams,
    read_scalars,
    session_values,
  )

  for workdir, _ in (halving_workdir, pbt_workdir):
    _, runs = read_hparams(workdir / 'tensorboard')
    records = [
      json.loads(x) for x in (workdir / 'curves.jsonl').read_text().splitlines()
    ]
    assert set(runs) == {'.'} | {f'model_{r["model"]:04d}' for r in records}
    for record in records:
      run = f'model_{record["model"]:04d}'
      curves = record['curves']
      rows = [{k: v[i] for k, v in curves.items()} for i in range(len(curves['step']))]
      found = read_scalars(workdir / 'tensorboard' / run)
      found.pop('test_accuracy', None)
      expected = expected_scalars(rows)
      assert json.dumps(found, sort_keys=True) == json.dumps(expected, sort_keys=True)
      declared = session_values(runs, run)
      if 'copied_from' in curves:
        sources = curves['copied_from']
        changes = [s for i, s in enumerate(sources) if i == 0 or s != sources[i - 1]]
        assert declared['lineage'] == ' > '.join(map(str, changes))
        assert declared['copies'] == sum(s != record['model'] for s in sources)
      else:
        assert declared['steps'] == curves['step'][-1]
        assert declared['rung'] == (1 if curves['step'] == [20] else 2)


def assert_same_search(a, b) -> None:
  """Workdirs `a` and `b` hold the same search: the same models, rungs or
  lineage, schedules and accuracies, and losses equal to float32 rounding
  (other device counts add up in another order)."""
  rows_a, rows_b = read_csv(a / 'results.csv'), read_csv(b / 'results.csv')
  assert len(rows_a) == len(rows_b)
  for x, y in zip(rows_a, rows_b, strict=True):
    assert {k: v for k, v in x.items() if k != 'final_loss'} == {
      k: v for k, v in y.items() if k != 'final_loss'
    }
    assert float(x['final_loss']) == pytest.approx(
      float(y['final_loss']), rel=1e-5, nan_ok=True
    )
  records_a, records_b = (
    [json.loads(line) for line in (w / 'curves.jsonl').read_text().splitlines()]
    for w in (a, b)
  )
  for x, y in zip(records_a, records_b, strict=True):
    assert x['model'] == y['model'] and x['curves'].keys() == y['curves'].keys()
    for name, values in x['curves'].items():
      if name == 'train_loss':
        assert values == pytest.approx(y['curves'][name], rel=1e-5, nan_ok=True)
      else:
        assert values == y['curves'][name], name


def start_two(changes: dict, workdir, envs=({}, {})):
  """`command(changes)` as two processes of two CPU devices each (gloo)."""
  from tests.test_distributed import TWO_DEVICES, flags, free_port

  port = free_port()
  return [
    start_main(
      *command(changes),
      f'--workdir={workdir}',
      *flags(i, port),
      env={**TWO_DEVICES, **env},
    )
    for i, env in enumerate(envs)
  ]


def finish(processes) -> list[str]:
  """Each process's stderr, once all have exited 0."""
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (_, stderr) in zip(processes, outputs, strict=True):
    assert p.returncode == 0, stderr[-3000:]
  return [stderr for _, stderr in outputs]


def test_two_processes_of_two_devices_pbt_as_one_device(pbt_workdir, tmp_path):
  """Sharded over 4 devices of 2 processes (gloo on the loopback), PBT copies
  the same members and gives the same results as on one device."""
  finish(start_two(PBT, tmp_path))
  assert json.loads((tmp_path / 'summary.json').read_text())['num_devices'] == 4
  assert_same_search(tmp_path, pbt_workdir[0])


def test_a_dead_peer_stops_hyperband_which_resumes_as_one_device(
  hyperband_workdir, tmp_path
):
  """Hyperband over 4 devices of 2 processes. Process 0 stops itself after
  its 3rd checkpoint (rung 1's evaluation, then the rung's record; then step
  40 of the second rung, which trains the survivor gathered across the
  processes) and holds the workdir's lock. Process 1 is killed then: it can
  go no further than its next collective, and writes nothing (killing it from
  inside at its own 3rd checkpoint could reset the socket while process 0
  still read that checkpoint's gather). Process 0, let go on, stops at its
  next collective with one line, not a traceback or an abort. The two resume,
  and the search keeps the same models with the same results as on one
  device."""
  survivor, dead = start_two(
    HYPERBAND, tmp_path, envs=({'MLP_STOP_AFTER_CHECKPOINT': '3'}, {})
  )
  _, status = os.waitpid(survivor.pid, os.WUNTRACED)
  if not os.WIFSTOPPED(status):  # show why it ended instead of stopping
    survivor.returncode = os.waitstatus_to_exitcode(status)
    _, dead_stderr = dead.communicate(timeout=300)
    stderr = survivor.stderr.read()
    raise AssertionError(f'{stderr[-3000:]}\n--- process 1:\n{dead_stderr[-3000:]}')
  with open(tmp_path / '.lock') as lock:  # process 0 holds the workdir
    with pytest.raises(BlockingIOError):
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert json.loads(lock.read())['pid'] == survivor.pid
  dead.kill()
  dead.communicate(timeout=300)
  assert dead.returncode == -signal.SIGKILL
  os.kill(survivor.pid, signal.SIGCONT)
  _, stderr = survivor.communicate(timeout=300)
  assert survivor.returncode == 1 and 'Traceback' not in stderr
  (error,) = error_lines(stderr)
  assert error.startswith('Error: process 0 lost contact with the other processes')
  assert 'run the same command on every process to resume' in error
  assert not (tmp_path / 'results.csv').exists()
  stderr = finish(start_two(HYPERBAND, tmp_path))
  # Resumed at step 40 of bracket 0's second rung, its first rung done.
  assert 'Resuming from' in stderr[0] and ': 1 round(s) done' in stderr[0]
  rung_2 = 'bracket 0, rung 2/2, H 8, 1 model: step'
  assert f'{rung_2} 60/60' in stderr[0] and f'{rung_2} 40/60' not in stderr[0]
  assert json.loads((tmp_path / 'summary.json').read_text())['num_devices'] == 4
  assert_same_search(tmp_path, hyperband_workdir[0])
