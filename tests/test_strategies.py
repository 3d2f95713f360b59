"""The strategies on a fake objective: no MNIST, no compile, milliseconds.

Each test drives a strategy's ask/tell loop with a function of the trial (its
member, its step budget, its hyperparameters) in place of training, and
checks what the strategy asks for: the survivors, the budgets, the copies,
and that a state saved as JSON resumes to the same asks.
"""

import json

import numpy as np
import pytest

from mlp.search import budgets
from mlp.search.grid import GridSearch
from mlp.search.halving import SuccessiveHalving
from mlp.search.hyperband import Hyperband
from mlp.search.pbt import Explore, PopulationBasedTraining
from mlp.search.strategy import Report

QUALITY = np.random.default_rng(0).random(200)  # each member's fake skill


def fake_accuracy(trial) -> float:
  """Better with skill and with steps, the same ranking at every budget."""
  return float(QUALITY[trial.member] * (1 - 1 / (1 + (trial.until or 100))))


def drive(strategy, objective=fake_accuracy, diverged=frozenset(), state=None):
  """Every round the strategy asks for, each told the objective's values;
  the state goes through JSON between rounds, as through a checkpoint."""
  state = strategy.init() if state is None else state
  rounds = []
  while (round_ := strategy.ask(state)) is not None:
    assert strategy.ask(state) == round_  # pure: the driver may ask twice
    rounds.append(round_)
    reports = [
      Report(t.member, objective(t), t.member in diverged) for t in round_.trials
    ]
    state = json.loads(json.dumps(strategy.tell(state, reports)))
  return rounds, state


def test_grid_trains_every_member_once_to_its_end():
  rounds, _ = drive(GridSearch(5))
  assert len(rounds) == 1 and rounds[0].final and not rounds[0].continued
  assert [(t.member, t.start, t.until) for t in rounds[0].trials] == [
    (m, None, None) for m in range(5)
  ]


def test_halving_keeps_the_top_k_of_each_rung_never_a_diverged_one():
  ends = budgets.rungs(10, 90, 3)
  strategy = SuccessiveHalving([budgets.Bracket(ends, [27, 9, 3])], eta=3)
  diverged = {int(np.argmax(QUALITY[:27]))}  # the best member, but diverged
  rounds, state = drive(strategy, diverged=diverged)
  assert [r.trials[0].until for r in rounds] == [10, 30, 90]
  assert [len(r.trials) for r in rounds] == [27, 9, 3]
  for before, after in zip(rounds, rounds[1:], strict=False):
    alive = [t.member for t in before.trials if t.member not in diverged]
    top = sorted(sorted(alive, key=lambda m: -QUALITY[m])[: len(after.trials)])
    assert [t.member for t in after.trials] == top
    assert all(t.start == t.member for t in after.trials)  # continues itself
  assert [r.final for r in rounds] == [False, False, True]
  assert [r.info['rung'] for r in rounds] == [1, 2, 3]
  assert strategy.summary(state)['rung_sizes'] == [27, 9, 3]


def test_hyperband_runs_li_et_al_brackets_in_order():
  strategy = Hyperband(1, 9, 3)  # brackets of 9, 5 and 3 members
  rounds, state = drive(strategy)
  sizes = [b.sizes for b in strategy.brackets]
  assert sizes == [[9, 3, 1], [5, 1], [3]]
  assert [len(r.trials) for r in rounds] == [9, 3, 1, 5, 1, 3]
  assert [r.info['bracket'] for r in rounds] == [0, 0, 0, 1, 1, 2]
  assert {t.member for t in rounds[3].trials} == set(range(9, 14))  # own draws
  assert [r.final for r in rounds] == [False, False, True, False, True, True]
  assert strategy.num_members == 17
  assert [b['rung_sizes'] for b in strategy.summary(state)['brackets']] == sizes


def test_halving_goes_to_the_next_bracket_when_every_member_diverged():
  strategy = Hyperband(1, 9, 3)
  rounds, _ = drive(strategy, diverged=set(range(9)))
  assert [len(r.trials) for r in rounds] == [9, 5, 1, 3]


EXPLORE = Explore(
  fields=('learning_rate',),
  low=(0.01,),
  high=(1.0,),
  perturb=1.25,
  resample=0.25,
  fraction=0.25,
)


def pbt_strategy(num_members=8, seed=0):
  points = [
    {'learning_rate': float(lr), 'seed': 0}
    for lr in np.geomspace(0.01, 1.0, num_members)
  ]
  return PopulationBasedTraining(points, [20, 40, 60], EXPLORE, seed)


def by_learning_rate(trial) -> float:
  """Best near a learning rate of 0.3."""
  return float(1 - abs(np.log(trial.changes['learning_rate'] / 0.3)))


def test_pbt_copies_the_best_into_the_worst_and_explores_in_range():
  rounds, state = drive(pbt_strategy(), objective=by_learning_rate)
  assert [r.trials[0].until for r in rounds] == [20, 40, 60]
  assert all(t.start is None for t in rounds[0].trials)
  for before, after in zip(rounds, rounds[1:], strict=False):
    scores = {t.member: by_learning_rate(t) for t in before.trials}
    ranked = sorted(scores, key=lambda m: (-scores[m], m))
    for t in after.trials:
      if t.start == t.member:  # kept: the same hyperparameters
        assert t.changes == before.trials[t.member].changes
        continue
      assert t.member in ranked[-2:] and t.start in ranked[:2]  # 1/4 of 8
      assert 0.01 <= t.changes['learning_rate'] <= 1.0
  assert sum(t.start != t.member for r in rounds[1:] for t in r.trials) == 4


def test_a_state_saved_as_json_resumes_to_the_same_asks():
  for make in (
    lambda: SuccessiveHalving([budgets.Bracket([10, 30, 90], [27, 9, 3])], 3),
    lambda: Hyperband(1, 9, 3),
    pbt_strategy,
  ):
    objective = by_learning_rate if make is pbt_strategy else fake_accuracy
    whole, _ = drive(make(), objective=objective)
    strategy, state = make(), None
    state = strategy.init()
    first = strategy.ask(state)
    reports = [Report(t.member, objective(t), False) for t in first.trials]
    saved = json.dumps(strategy.tell(state, reports))
    resumed, _ = drive(make(), objective=objective, state=json.loads(saved))
    assert [first, *resumed] == whole


def test_pbt_draws_depend_on_the_seed_only():
  a, _ = drive(pbt_strategy(seed=1), objective=by_learning_rate)
  b, _ = drive(pbt_strategy(seed=1), objective=by_learning_rate)
  c, _ = drive(pbt_strategy(seed=2), objective=by_learning_rate)
  assert a == b and a != c


def test_remaining_steps_count_down_to_zero():
  for strategy in (GridSearch(3), Hyperband(1, 9, 3), pbt_strategy()):
    state, before = strategy.init(), None
    objective = by_learning_rate if strategy.name == 'pbt' else fake_accuracy
    while (round_ := strategy.ask(state)) is not None:
      left = strategy.remaining_steps(state, [100] * 20)
      assert left > 0 and (before is None or left < before)
      before = left
      reports = [Report(t.member, objective(t), False) for t in round_.trials]
      state = strategy.tell(state, reports)
    assert strategy.remaining_steps(state, [100] * 20) == 0


@pytest.mark.parametrize('members', [1, 2, 7])
def test_survivors_are_at_least_one_when_any_is_finite(members):
  keep = max(members // 3, 1)
  assert (
    len(budgets.survivors(range(members), QUALITY[:members], [False] * members, keep))
    == keep
  )
