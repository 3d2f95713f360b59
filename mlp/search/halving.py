"""Successive halving as a strategy: rungs of growing budgets, the best go on.

Each rung is a round: its members train to the rung's end, and the best
`1/eta` by validation accuracy (`budgets.survivors`) continue from their own
states in the next rung. Several brackets (Hyperband's, `hyperband.py`) run
one after another, each over its own members; the best model is chosen
among the members that reached a bracket's last rung.
"""

from collections.abc import Sequence

from mlp.search import budgets
from mlp.search.strategy import Report, Round, Strategy, Trial


class SuccessiveHalving(Strategy):
  """Synchronous successive halving over `brackets`, in order.

  Attributes:
    brackets: each bracket's rung ends and sizes, and its first member.
    eta: the factor between rung sizes.
  """

  name = 'halving'
  columns = ('rung', 'steps')
  pick_rule = (
    "the best val accuracy among the models that reached a bracket's last rung"
  )

  def __init__(self, brackets: Sequence[budgets.Bracket], eta: int):
    self.brackets = list(brackets)
    self.eta = eta

  def init(self) -> dict:
    return {'bracket': 0, 'rung': 0, 'alive': self._members(0), 'trained': [[]]}

  def _members(self, bracket: int) -> list[int]:
    b = self.brackets[bracket]
    return list(range(b.first, b.first + b.sizes[0]))

  def ask(self, state: dict) -> Round | None:
    number, rung = state['bracket'], state['rung']
    if number >= len(self.brackets):
      return None
    bracket = self.brackets[number]
    end = bracket.ends[rung]
    last = rung == len(bracket.ends) - 1
    prefix = f'bracket {number}, ' if len(self.brackets) > 1 else ''
    trials = tuple(
      Trial(m, start=m if rung else None, until=end) for m in state['alive']
    )
    info = {'rung': rung + 1, 'steps': end}  # counted from 1, as the logs are
    if len(self.brackets) > 1:
      info = {'bracket': number, **info}
    return Round(
      trials,
      name=f'{prefix}rung {rung + 1}/{len(bracket.ends)}',
      final=last,
      continued=not last,
      info=info,
    )

  def tell(self, state: dict, reports: Sequence[Report]) -> dict:
    number, rung = state['bracket'], state['rung']
    bracket = self.brackets[number]
    trained = [*state['trained'][:-1], [*state['trained'][-1], len(reports)]]
    alive = []
    if rung + 1 < len(bracket.ends):
      alive = budgets.survivors(
        [r.member for r in reports],
        [r.val_accuracy for r in reports],
        [r.diverged for r in reports],
        bracket.sizes[rung + 1],
      )
    if alive:
      return {'bracket': number, 'rung': rung + 1, 'alive': alive, 'trained': trained}
    if number + 1 == len(self.brackets):
      return {'bracket': number + 1, 'rung': 0, 'alive': [], 'trained': trained}
    return {
      'bracket': number + 1,
      'rung': 0,
      'alive': self._members(number + 1),
      'trained': [*trained, []],
    }

  def remaining_steps(self, state: dict, num_iters: Sequence[int]) -> int:
    count, steps = len(state['alive']), 0
    for b in range(state['bracket'], len(self.brackets)):
      ends = self.brackets[b].ends
      for j in range(state['rung'] if b == state['bracket'] else 0, len(ends)):
        steps += count * (ends[j] - (ends[j - 1] if j else 0))
        count = max(count // self.eta, 1)
      if b + 1 < len(self.brackets):
        count = self.brackets[b + 1].sizes[0]
    return steps

  def summary(self, state: dict) -> dict:
    brackets = [
      {
        'rungs': b.ends,
        'rung_sizes': sizes,
        'models': [b.first, b.first + b.sizes[0]],
      }
      for b, sizes in zip(self.brackets, state['trained'], strict=False)
    ]
    one = {k: brackets[0][k] for k in ('rungs', 'rung_sizes')}
    return {
      'search': self.name,
      'brackets': brackets,
      **(one if len(self.brackets) == 1 else {}),
    }

  def fingerprint(self) -> dict:
    return {'name': self.name, 'eta': self.eta, 'brackets': self.brackets}
