"""Grid and random search as a strategy: every member trains once, to its end.

The members are the points of `config.sweep` (`mlp.grid.points`): the
Cartesian product of its tuples, or random draws. There is one round, and
every trial in it is final.
"""

from collections.abc import Sequence

from mlp.search.strategy import Report, Round, Strategy, Trial


class GridSearch(Strategy):
  """Trains `num_members` members from scratch, each to its `num_iters`."""

  def __init__(self, num_members: int, name: str = 'grid'):
    self.num_members = num_members
    self.name = name

  def init(self) -> dict:
    return {'done': False}

  def ask(self, state: dict) -> Round | None:
    if state['done']:
      return None
    return Round(tuple(Trial(m) for m in range(self.num_members)), name='')

  def tell(self, state: dict, reports: Sequence[Report]) -> dict:
    return {'done': True}

  def remaining_steps(self, state: dict, num_iters: Sequence[int]) -> int:
    return 0 if state['done'] else int(sum(num_iters))

  def fingerprint(self) -> dict:
    return {'name': self.name, 'members': self.num_members}
