"""The arithmetic of adaptive search: rung budgets, top-k, gathers of a model axis,
and population-based training's exploit and explore.

Synchronous successive halving (Jamieson & Talwalkar 2016; Li et al. 2017,
arXiv 1603.06560) trains every model of a rung to the rung's budget, keeps
the best `1/eta` by validation accuracy, and trains those on to the next
rung. Because the models of a sweep share one program and reach each
evaluation together, a rung ends for all of them at once: no stragglers.

This module holds the parts that need no training loop: the rung budgets
(`rungs`, `rung_sizes`), the choice of survivors (`survivors`), and the
gather of the survivors' rows of a model-axis pytree (`gather_models`), and
population-based training's step between two intervals (`exploit_explore`,
jitted: the state and hyperparameters never leave the device).
`mlp/modes/sweep.py` drives them.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# `config.search` values that train models for different numbers of steps.
ADAPTIVE = ('halving', 'hyperband')


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


def padded(members: list, size: int) -> list:
  """`members` with its last element repeated up to `size` (one program shape
  per rung size, a multiple of the device count; the padding's results are
  ignored)."""
  return members + [members[-1]] * (size - len(members))


def gather_models(tree, axes, rows: Sequence[int]):
  """The `rows` of every leaf's model axis; leaves without one are kept.

  Args:
    tree: a pytree of host arrays (a `TrainState` with its model axis first).
    axes: a matching pytree prefix of `0` (model axis first) or `None`.
    rows: positions along the model axis, in the order wanted.

  Returns:
    The same structure, each model-axis leaf `(len(rows), ...)`.
  """
  import jax  # only here: the rest of the module is plain arithmetic

  rows = np.asarray(rows, np.int64)

  def take(axis, subtree):
    if axis is None:
      return subtree
    return jax.tree.map(lambda x: np.take(np.asarray(x), rows, axis=axis), subtree)

  return jax.tree.map(take, axes, tree, is_leaf=lambda x: x is None or x == 0)


def concat_models(trees: list, axes):
  """Pytrees of the same structure joined along their model axis; a leaf
  without one (the shared step) is taken from the first tree."""
  import jax

  def join(axis, *subtrees):
    if axis is None:
      return subtrees[0]
    return jax.tree.map(
      lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=axis), *subtrees
    )

  return jax.tree.map(join, axes, *trees, is_leaf=lambda x: x is None or x == 0)


class Explore(NamedTuple):
  """How population-based training explores (hashable: a static argument).

  Attributes:
    fields: the hyperparameters explored (stacked along the model axis).
    low: each field's smallest value.
    high: each field's largest value.
    perturb: a copied value is multiplied by `perturb` or `1 / perturb`.
    resample: the probability of drawing the value afresh (log-uniform in
      `[low, high]`) instead of perturbing it.
    fraction: the worst `fraction` of the population copy the best `fraction`.
  """

  fields: tuple[str, ...]
  low: tuple[float, ...]
  high: tuple[float, ...]
  perturb: float
  resample: float
  fraction: float


def exploit_explore(
  key, state, hparams, val_accuracy, finite, num_members, *, explore, state_axes
):
  """One exploit-and-explore step of population-based training (Jaderberg et
  al. 2017, truncation selection), as gathers and elementwise maps.

  The members ranked in the bottom `fraction` by validation accuracy (and
  every member whose loss or params are not finite) copy the state and the
  hyperparameters of a member drawn uniformly from the top `fraction`
  (ties: the lower index ranks higher); then each explored hyperparameter of
  a copy is redrawn (probability `resample`) or multiplied by `perturb` or
  its inverse, and clipped to its range.

  Args:
    key: a PRNG key for this step.
    state: the population's training state, model axis first.
    hparams: `Hyperparams` whose explored fields are stacked (`(n,)`).
    val_accuracy: `(n,)` each member's validation accuracy.
    finite: `(n,)` whether each member's loss and params are finite.
    num_members: members that count (the rest is padding, never copied from).
    explore: the exploration's settings.
    state_axes: the model axis of each part of `state` (`core.STATE_AXES`).

  Returns:
    `(state, hparams, source)`: the new state and hyperparameters, and for
    each member the member it copied (itself if it was not replaced).
  """
  import jax
  import jax.numpy as jnp

  n = val_accuracy.shape[0]
  real = jnp.arange(n) < num_members
  count = jnp.maximum(jnp.floor(num_members * explore.fraction), 1).astype(jnp.int32)
  score = jnp.where(real & finite, val_accuracy, -jnp.inf)
  order = jnp.argsort(-score, stable=True)  # best first, ties by index
  rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  replaced = ~real | ~finite | (rank >= num_members - count)
  pick, coin, factor = jax.random.split(key, 3)
  donors = order[jax.random.randint(pick, (n,), 0, count)]
  source = jnp.where(replaced, donors, jnp.arange(n))

  def gather(axis, subtree):
    if axis is None:
      return subtree
    return jax.tree.map(lambda x: jnp.take(x, source, axis=axis), subtree)

  state = jax.tree.map(gather, state_axes, state, is_leaf=lambda x: x is None or x == 0)
  values = {}
  for name in hparams._fields:
    value = getattr(hparams, name)
    values[name] = jnp.asarray(value)[source] if jnp.ndim(value) else value
  for i, name in enumerate(explore.fields):
    low, high = explore.low[i], explore.high[i]
    keys = jax.random.split(jax.random.fold_in(coin, i), 3)
    scale = jnp.where(
      jax.random.bernoulli(jax.random.fold_in(factor, i), 0.5, (n,)),
      explore.perturb,
      1.0 / explore.perturb,
    )
    fresh = jnp.exp(
      jax.random.uniform(keys[0], (n,), minval=np.log(low), maxval=np.log(high))
    )
    redraw = jax.random.bernoulli(keys[1], explore.resample, (n,))
    copied = values[name]
    new = jnp.clip(jnp.where(redraw, fresh, copied * scale), low, high)
    values[name] = jnp.where(replaced, new, copied).astype(copied.dtype)
  return state, type(hparams)(**values), source
