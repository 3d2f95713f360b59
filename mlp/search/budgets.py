"""The arithmetic of successive halving and Hyperband: rung budgets and top-k.

Synchronous successive halving (Jamieson & Talwalkar 2016; Li et al. 2017,
arXiv 1603.06560) trains every model of a rung to the rung's budget, keeps
the best `1/eta` by validation accuracy, and trains those on to the next
rung. Because the models of a sweep share one program and reach each
evaluation together, a rung ends for all of them at once: no stragglers.

This module holds the parts that are plain arithmetic: the rung budgets
(`rungs`, `rung_sizes`), Hyperband's brackets (`hyperband`) and the choice of
survivors (`survivors`). The strategies in `halving.py` and `hyperband.py`
use them.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Bracket(NamedTuple):
  """One run of successive halving: where its rungs end, how many models each
  rung trains (before divergence), and its first model's index."""

  ends: list[int]
  sizes: list[int]
  first: int = 0


def rungs(min_iters: int, max_iters: int, eta: int) -> list[int]:
  """The step at which each rung ends: `max_iters / eta**k`, ..., `max_iters`.

  There are `s + 1` rungs with `s = floor(log_eta(max_iters / min_iters))`,
  so the first rung's budget is at least `min_iters`.

  Args:
    min_iters: the smallest budget a model may get.
    max_iters: the budget of the last rung.
    eta: the factor between the budgets of successive rungs (>= 2).

  Returns:
    Increasing steps, the last one `max_iters`.
  """
  s = int(math.floor(math.log(max_iters / min_iters) / math.log(eta) + 1e-9))
  ends = [int(round(max_iters / eta ** (s - i))) for i in range(s + 1)]
  return sorted(set(ends))


def rung_sizes(num_models: int, num_rungs: int, eta: int) -> list[int]:
  """Models trained in each rung: `num_models`, then `1/eta` of the previous
  rung's (at least one), before any are lost to divergence."""
  sizes = [num_models]
  for _ in range(num_rungs - 1):
    sizes.append(max(sizes[-1] // eta, 1))
  return sizes


def hyperband(min_iters: int, max_iters: int, eta: int) -> list[Bracket]:
  """Li et al.'s (2017) brackets, the most exploratory first.

  With `R = max_iters / min_iters` and `s_max = floor(log_eta(R))`, bracket
  `s` (from `s_max` down to 0) starts `n = ceil((s_max + 1) / (s + 1) * eta**s)`
  models at `max_iters / eta**s` steps and halves them `s` times, so every
  bracket spends about the same budget, `(s_max + 1) * max_iters` model-steps.
  Each bracket's models follow the previous bracket's in the grid.
  """
  all_ends = rungs(min_iters, max_iters, eta)
  s_max = len(all_ends) - 1
  brackets, first = [], 0
  for s in range(s_max, -1, -1):
    n = math.ceil((s_max + 1) / (s + 1) * eta**s)
    brackets.append(Bracket(all_ends[s_max - s :], rung_sizes(n, s + 1, eta), first))
    first += n
  return brackets


def survivors(
  indices: Sequence[int],
  val_accuracy: Sequence[float],
  diverged: Sequence[bool],
  keep: int,
) -> list[int]:
  """The models that go on to the next rung, in increasing index order.

  Ranks by validation accuracy, highest first; ties go to the lower index
  (the earlier place in the grid), as `results.csv` ranks them. Diverged
  models never survive, even when fewer than `keep` models are left.

  Args:
    indices: each model's index in the grid, `(n,)`.
    val_accuracy: each model's validation accuracy at the end of the rung.
    diverged: whether each model's loss or params stopped being finite.
    keep: how many models survive at most.

  Returns:
    The surviving indices (at most `keep`), sorted.
  """
  indices = np.asarray(indices, np.int64)
  accuracy = np.asarray(val_accuracy, np.float64)
  bad = np.asarray(diverged, bool) | ~np.isfinite(accuracy)
  order = np.lexsort((indices, -np.where(bad, -np.inf, accuracy), bad))
  kept = [int(indices[i]) for i in order[:keep] if not bad[i]]
  return sorted(kept)
