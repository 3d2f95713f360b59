"""Hyperband as a strategy: Li et al.'s brackets of successive halving.

The most exploratory bracket first (many members, a small first budget),
down to one that trains a few members for the whole budget; each bracket's
members are random draws of their own (`budgets.hyperband`).
"""

from mlp.search import budgets
from mlp.search.halving import SuccessiveHalving


class Hyperband(SuccessiveHalving):
  """Successive halving in each of Hyperband's brackets, one after another."""

  name = 'hyperband'
  columns = ('bracket', 'rung', 'steps')

  def __init__(self, min_iters: int, max_iters: int, eta: int):
    super().__init__(budgets.hyperband(min_iters, max_iters, eta), eta)

  @property
  def num_members(self) -> int:
    """How many members its brackets draw, in all."""
    return sum(b.sizes[0] for b in self.brackets)
