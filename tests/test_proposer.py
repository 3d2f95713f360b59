"""--config.search=tpe: Optuna's TPE asked for a batch per round, each batch
through halving's rungs. On a fake objective (no MNIST, no compile): the
asks come from the seed, the survivors are the top-k, a state saved as JSON
resumes to the same asks (with the study lost, or ahead of the state), and
the study holds every rung's value. Then one tiny search end to end, its
study in the workdir, interrupted after a tell and resumed bitwise."""

import csv
import json
import math

import numpy as np
import pytest

optuna = pytest.importorskip('optuna', reason='search=tpe needs Optuna')

from mlp.errors import UserError  # noqa: E402
from mlp.search import budgets, from_config, space  # noqa: E402
from mlp.search.proposer import Proposer  # noqa: E402
from mlp.search.strategy import Report  # noqa: E402
from tests.test_mode_sweep import sweep_config  # noqa: E402

SPACES = {
  'learning_rate': ('log', 1e-3, 1.0),
  'l2_reg': ('linear', 0.0, 1e-2),
  'hidden_size': (8, 16, 32),
  'seed': ('int', 0, 9),
}


def proposer(seed=0, storage=None, num_samples=12, batch=5, startup=10) -> Proposer:
  """12 members in batches of 5, 5 and 2; rungs at 10, 30 and 90 steps."""
  return Proposer(SPACES, num_samples, batch, [10, 30, 90], 3, seed, storage, startup)


def fake_accuracy(trial) -> float:
  """Best near a learning rate of 0.1 and a small lambda, better with steps."""
  point = trial.changes
  skill = math.exp(-((math.log10(point['learning_rate']) + 1) ** 2)) - point['l2_reg']
  return skill * (1 - 1 / (1 + trial.until)) + point['hidden_size'] * 1e-4


def drive(
  strategy,
  state=None,
  rounds=None,
  objective=fake_accuracy,
  diverged=lambda t: False,
  stop=None,
):
  """The strategy's rounds, each told the objective; the state goes through
  JSON between rounds, as through a checkpoint. `stop`: return once this
  many rounds are done."""
  state = strategy.init() if state is None else state
  rounds = [] if rounds is None else rounds
  while (round_ := strategy.ask(state)) is not None and len(rounds) != stop:
    assert strategy.ask(state) == round_  # pure: the driver may ask twice
    rounds.append(round_)
    reports = [Report(t.member, objective(t), diverged(t)) for t in round_.trials]
    state = json.loads(json.dumps(strategy.tell(state, reports)))
  return rounds, state


def points(rounds) -> dict[int, dict]:
  return {t.member: dict(t.changes) for r in rounds for t in r.trials}


def test_asks_are_reproducible_from_the_seed_and_in_the_space():
  rounds, _ = drive(proposer(seed=0))
  again, _ = drive(proposer(seed=0))
  assert again == rounds
  other, _ = drive(proposer(seed=1))
  assert points(other) != points(rounds)
  asked = points(rounds)
  assert sorted(asked) == list(range(12))
  for point in asked.values():
    assert 1e-3 <= point['learning_rate'] <= 1.0 and 0 <= point['l2_reg'] <= 1e-2
    assert point['hidden_size'] in (8, 16, 32) and point['seed'] in range(10)
    assert all(type(point[f]) is float for f in ('learning_rate', 'l2_reg'))
    assert all(type(point[f]) is int for f in ('hidden_size', 'seed'))
  # Past Optuna's 10 random startup trials, a point comes from the values
  # told before it: the worst become the best, and the third batch changes.
  inverted, _ = drive(proposer(seed=0), objective=lambda t: 1 - fake_accuracy(t))
  assert [points(inverted)[m] == asked[m] for m in (0, 9, 10, 11)] == [
    True,
    True,
    False,
    False,
  ]


def test_each_batch_runs_the_rungs_and_keeps_the_top_k():
  strategy = proposer()
  best = lambda t: t.member == 1  # noqa: E731 -- the first batch's diverged member
  rounds, state = drive(strategy, diverged=best)
  assert [(r.info['batch'], r.info['rung'], len(r.trials)) for r in rounds] == [
    (0, 1, 5),
    (0, 2, 1),
    (0, 3, 1),
    (1, 1, 5),
    (1, 2, 1),
    (1, 3, 1),
    (2, 1, 2),
    (2, 2, 1),
    (2, 3, 1),
  ]
  assert rounds[4].name == 'batch 1, rung 2/3'  # rungs from 1, as the logs
  assert [r.trials[0].until for r in rounds] == [10, 30, 90] * 3
  assert [r.final for r in rounds] == [False, False, True] * 3
  assert [t.member for t in rounds[3].trials] == [5, 6, 7, 8, 9]
  for before, after in zip(rounds, rounds[1:], strict=False):
    if after.info['rung'] == 1:
      assert all(t.start is None for t in after.trials)  # a new batch: from scratch
      continue
    alive = [t for t in before.trials if not best(t)]
    top = sorted(alive, key=lambda t: (-fake_accuracy(t), t.member))
    assert [t.member for t in after.trials] == sorted(
      t.member for t in top[: len(after.trials)]
    )
    assert all(t.start == t.member for t in after.trials)  # continues itself
    assert all(t.changes == points(rounds)[t.member] for t in after.trials)
  steps = sum(len(r.trials) * (r.trials[0].until - p) for r, p in _starts(rounds))
  assert proposer().remaining_steps(proposer().init(), []) == steps
  summary = strategy.summary(state)
  assert [b['rung_sizes'] for b in summary['batches']] == [[5, 1, 1]] * 2 + [[2, 1, 1]]
  assert [b['models'] for b in summary['batches']] == [[0, 5], [5, 10], [10, 12]]
  assert summary['study'] == {'name': 'search', 'complete': 3, 'pruned': 9}
  assert budgets.rung_sizes(5, 3, 3) == [5, 1, 1]


def _starts(rounds):
  """Each round with the step its trials start from."""
  return [
    (r, 0 if r.info['rung'] == 1 else rounds[i - 1].trials[0].until)
    for i, r in enumerate(rounds)
  ]


@pytest.mark.parametrize('stop', [1, 2, 4])
def test_a_state_from_json_resumes_to_the_same_asks(stop):
  whole, final = drive(proposer())
  # A new process: a new strategy whose study (in memory) is empty.
  rounds, state = drive(proposer(), stop=stop)
  rounds, state = drive(proposer(), state, rounds)
  assert rounds == whole and state == final
  # A kill after a tell, before its checkpoint: the study is ahead of the
  # state the search resumes from, and the tell comes again.
  strategy = proposer()
  rounds, state = drive(strategy, stop=stop)
  ahead, _ = drive(strategy, state, list(rounds), stop=stop + 1)
  rounds, state = drive(strategy, state, rounds)
  assert ahead == whole[: stop + 1] and rounds == whole and state == final


def test_the_study_in_sqlite_holds_every_rung_and_how_it_ended(tmp_path):
  storage = f'sqlite:///{tmp_path / "optuna.db"}'
  # The second batch modelled on the first, read back from the file: as
  # from memory (where the other processes of a search keep theirs).
  strategy = proposer(storage=storage, num_samples=4, batch=2, startup=2)
  rounds, state = drive(strategy)
  assert rounds == drive(proposer(num_samples=4, batch=2, startup=2))[0]
  assert points(rounds)[2] != points(drive(proposer(num_samples=4, batch=2))[0])[2]
  study = optuna.load_study(study_name='search', storage=storage)
  assert study.direction == optuna.study.StudyDirection.MAXIMIZE
  trials = study.get_trials()
  assert [t.number for t in trials] == list(range(4))
  reported = {}
  for r in rounds:
    for t in r.trials:
      reported.setdefault(t.member, {})[t.until] = fake_accuracy(t)
      assert trials[t.member].params == t.changes
  finishers = {t.member for r in rounds if r.final for t in r.trials}
  for trial in trials:
    assert trial.intermediate_values == reported[trial.number]
    assert trial.value == reported[trial.number][max(reported[trial.number])]
    expected = 'COMPLETE' if trial.number in finishers else 'PRUNED'
    assert trial.state.name == expected
  assert study.best_value == max(reported[m][90] for m in finishers)
  assert len(finishers) == 2


def test_a_diverged_member_is_pruned_and_a_value_less_one_fails():
  storage = optuna.storages.InMemoryStorage()
  strategy = proposer(storage=storage, num_samples=3, batch=3)
  state = strategy.init()
  reports = [Report(0, 0.5, True), Report(1, math.nan, True), Report(2, 0.4, False)]
  state = strategy.tell(state, reports)
  assert state['alive'] == [2]
  study = optuna.load_study(study_name='search', storage=storage)
  assert [t.state.name for t in study.trials] == ['PRUNED', 'FAIL', 'RUNNING']
  assert [t.intermediate_values for t in study.trials] == [{10: 0.5}, {}, {10: 0.4}]


def test_a_damaged_study_file_is_one_clear_error(tmp_path):
  (tmp_path / 'optuna.db').write_text('not a database')
  strategy = proposer(storage=f'sqlite:///{tmp_path / "optuna.db"}')
  with pytest.raises(UserError, match='cannot be read .* delete the file'):
    strategy.init()


TPE = {
  'search': 'tpe',
  'num_samples': 4,
  'tpe_batch': 2,
  'eta': 3,
  'min_iters': 20,
  'max_iters': 60,
  'sweep.hidden_size': (8,),
  'sweep.learning_rate': ('log', 0.05, 1.0),
}


@pytest.mark.parametrize(
  'changes, expected',
  [
    ({'num_samples': 0}, 'num_samples=0: search=tpe needs num_samples >= 1'),
    ({'tpe_batch': 0}, 'tpe_batch=0'),
    ({'sweep.lr_decay': ('log', 0.5, 2.0)}, r'config.sweep.lr_decay holds 2\.0'),
    ({'min_iters': 100}, 'min_iters=100'),
  ],
)
def test_bad_settings_are_refused_with_the_strategy(changes, expected):
  """`api.run` makes the strategy before it creates the workdir."""
  with pytest.raises(UserError, match=expected):
    from_config.strategy_and_members(sweep_config(**{**TPE, **changes}), 55000)


def test_without_optuna_one_line_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(__import__('sys').modules, 'optuna', None)  # import fails
  with pytest.raises(UserError) as error:
    from_config.strategy_and_members(sweep_config(**TPE), 55000)
  assert str(error.value) == (
    "search=tpe needs Optuna, which is not installed: pip install -e '.[optuna]' "
    '(or pip install optuna)'
  )


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def tpe_workdir(tmp_path_factory, mnist):
  from tests.test_search import run_search

  return run_search(TPE, tmp_path_factory.mktemp('tpe'), mnist)


@pytest.mark.xdist_group('search')  # H 8, chunks of two: the search tests' programs
def test_a_tpe_sweep_keeps_its_study_in_the_workdir(tpe_workdir):
  workdir, summary = tpe_workdir
  rows = read_csv(workdir / 'results.csv')
  assert len(rows) == 4 and list(rows[0])[-4:] == ['batch', 'rung', 'steps', 'picked']
  finishers = [r for r in rows if r['steps'] == '60']
  assert sorted(r['batch'] for r in finishers) == ['0', '1']
  assert all(r['rung'] == '2' for r in finishers) and len(finishers) == 2
  # The pick: the best finisher (a model dropped at step 20 may rank higher).
  (picked,) = [r for r in rows if r['picked'] == 'True']
  assert picked == finishers[0]
  assert summary['best']['val_accuracy'] == float(picked['val_accuracy'])
  curves = {
    c['model']: c['curves']
    for c in map(json.loads, (workdir / 'curves.jsonl').read_text().splitlines())
  }
  study = optuna.load_study(
    study_name='search', storage=f'sqlite:///{workdir}/optuna.db'
  )
  assert len(study.trials) == 4
  for trial in study.trials:
    # Its point trained (a row of the table), each evaluation at a rung's end
    # reported, and how it ended.
    curve = curves[trial.number]
    (row,) = [
      r for r in rows if float(r['learning_rate']) == trial.params['learning_rate']
    ]
    assert int(row['steps']) == curve['step'][-1]
    ends = {s: v for s, v in zip(curve['step'], curve['val_accuracy'], strict=True)}
    assert trial.intermediate_values == {s: ends[s] for s in (20, 60) if s in ends}
    assert trial.state.name == ('COMPLETE' if row['steps'] == '60' else 'PRUNED')
  assert study.best_value == summary['best']['val_accuracy']
  assert summary['study'] == {'name': 'search', 'complete': 2, 'pruned': 2}


@pytest.mark.xdist_group('search')
def test_a_tpe_sweeps_plot_has_a_panel_per_batch(tpe_workdir):
  from mlp import search_plots

  workdir, summary = tpe_workdir
  assert [b['models'] for b in summary['batches']] == [[0, 2], [2, 4]]
  (path,) = search_plots.write_search_plots(workdir)
  assert path == workdir / 'plots' / 'search.png' and path.stat().st_size > 10_000


@pytest.mark.xdist_group('search')
def test_a_tpe_sweep_stopped_after_a_tell_resumes_bitwise(
  tpe_workdir, tmp_path, monkeypatch, mnist_loaded_once
):
  """Stopped in this process just before the checkpoint that would first
  hold the second batch's asks: the study has the first batch's last tell
  and the second batch's asks, the checkpoint neither. The same call
  resumes, tells the last rung again, and gives the same search."""
  from mlp import checkpoint
  from mlp.modes import sweep

  whole, _ = tpe_workdir
  save = checkpoint.save

  def stop_before_batch_1(directory, tree, metadata, **kwargs):
    search = metadata['finished'].get('search', {})
    if search.get('state', {}).get('batch') == 1:
      raise KeyboardInterrupt
    return save(directory, tree, metadata, **kwargs)

  monkeypatch.setattr(checkpoint, 'save', stop_before_batch_1)
  with pytest.raises(KeyboardInterrupt):
    sweep.run(sweep_config(**TPE), str(tmp_path))
  monkeypatch.setattr(checkpoint, 'save', save)
  storage = f'sqlite:///{tmp_path}/optuna.db'
  ahead = optuna.load_study(study_name='search', storage=storage).trials
  assert sorted(t.state.name for t in ahead[:2]) == ['COMPLETE', 'PRUNED']
  assert [t.state.name for t in ahead[2:]] == ['RUNNING'] * 2
  summary = sweep.run(sweep_config(**TPE), str(tmp_path))
  assert summary['resumed']
  for name in ('results.csv', 'curves.jsonl'):
    assert (tmp_path / name).read_text() == (whole / name).read_text()
  for name, value in np.load(whole / 'best_params.npz').items():
    np.testing.assert_array_equal(np.load(tmp_path / 'best_params.npz')[name], value)
  resumed = optuna.load_study(study_name='search', storage=storage).trials
  uninterrupted = optuna.load_study(
    study_name='search', storage=f'sqlite:///{whole}/optuna.db'
  ).trials
  assert [(t.params, t.state, t.intermediate_values, t.value) for t in resumed] == [
    (t.params, t.state, t.intermediate_values, t.value) for t in uninterrupted
  ]


def test_configs_tpe_has_halvings_space_and_budget():
  from configs import halving, tpe

  strategy, members = from_config.strategy_and_members(tpe.get_config(), 55000)
  assert len(members) == 128 and strategy.num_batches == 4 and strategy.batch == 32
  assert strategy.ends == budgets.rungs(125, 2000, 4) == [125, 500, 2000]
  assert set(strategy.proposes) == set(space.swept_values(halving.get_config()))
  # The same model-steps as halving's 128 models: 32 -> 8 -> 2 in each batch.
  assert (
    strategy.remaining_steps({'batch': 0, 'rung': 0, 'alive': list(range(32))}, [])
    == 4 * (32 * 125 + 8 * 375 + 2 * 1500)
    == 128 * 125 + 32 * 375 + 8 * 1500
  )
