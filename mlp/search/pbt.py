"""Population-based training as a strategy: exploit and explore between rounds.

Every `interval` steps is a round in which every member trains on. Between
two rounds the members ranked in the bottom `fraction` by validation
accuracy (and every diverged member) copy a member drawn from the top
`fraction`: its state (the driver gathers it: the trial's `start`) and its
hyperparameters; then each explored hyperparameter of a copy is redrawn
(probability `resample`) or multiplied by `perturb` or its inverse, and
clipped to its range (Jaderberg et al. 2017, truncation selection).

The draws use JAX's counter-based PRNG on a few host values (one key per
exploit, from the search's seed), so they do not depend on the device count.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from mlp.search.strategy import Report, Round, Strategy, Trial


class Explore(NamedTuple):
  """How population-based training explores.

  Attributes:
    fields: the hyperparameters explored.
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


def exploit_explore(key, val_accuracy, finite, values: dict, explore: Explore):
  """Which member each member copies, and the hyperparameters it then has.

  Args:
    key: a PRNG key for this exploit.
    val_accuracy: `(n,)` each member's validation accuracy.
    finite: `(n,)` whether each member's loss and params are finite.
    values: each hyperparameter that varies across the population, `(n,)`
      (int32 or float32), the explored ones among them.
    explore: the exploration's settings.

  Returns:
    `(source, values)`: for each member the member it copied (itself if it
    was not replaced), and every entry of `values` after the copy and the
    exploration.
  """
  import jax
  import jax.numpy as jnp

  n = val_accuracy.shape[0]
  count = max(int(np.floor(n * explore.fraction)), 1)
  score = jnp.where(finite, val_accuracy, -jnp.inf)
  order = jnp.argsort(-score, stable=True)  # best first, ties by index
  rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  replaced = ~finite | (rank >= n - count)
  pick, coin, factor = jax.random.split(key, 3)
  donors = order[jax.random.randint(pick, (n,), 0, count)]
  source = jnp.where(replaced, donors, jnp.arange(n))
  new_values = {name: jnp.asarray(v)[source] for name, v in values.items()}
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
    copied = new_values[name]
    new = jnp.clip(jnp.where(redraw, fresh, copied * scale), low, high)
    new_values[name] = jnp.where(replaced, new, copied).astype(copied.dtype)
  return np.asarray(source), {k: np.asarray(v) for k, v in new_values.items()}


class PopulationBasedTraining(Strategy):
  """Population-based training of the members at `points`.

  Attributes:
    points: each member's swept hyperparameters at the start.
    ends: the step at which each round ends, the last the run's end.
    explore: the exploration's settings.
    seed: the seed of the exploits' draws.
  """

  name = 'pbt'
  columns = ('copies',)
  pick_rule = 'the best val accuracy at the end of the last interval'

  def __init__(
    self, points: Sequence[dict], ends: Sequence[int], explore: Explore, seed: int
  ):
    self.points = [dict(p) for p in points]
    self.ends = list(ends)
    self.explore = explore
    self.seed = seed
    self.schedule = tuple(explore.fields)

  def init(self) -> dict:
    return {'round': 0, 'points': self.points, 'source': None}

  def ask(self, state: dict) -> Round | None:
    k = state['round']
    if k >= len(self.ends):
      return None
    source = state['source']
    trials = tuple(
      Trial(m, start=None if source is None else source[m], until=end, changes=p)
      for m, (p, end) in enumerate(
        zip(state['points'], [self.ends[k]] * len(self.points), strict=True)
      )
    )
    last = k == len(self.ends) - 1
    return Round(
      trials,
      name=f'PBT interval {k + 1}/{len(self.ends)}',
      final=last,
      continued=not last,
    )

  def tell(self, state: dict, reports: Sequence[Report]) -> dict:
    import jax

    k = state['round']
    if k == len(self.ends) - 1:
      return {**state, 'round': k + 1}
    points = state['points']
    names = [f for f in points[0] if f in self.explore.fields or _varies(points, f)]
    values = {
      f: np.asarray([p[f] for p in points], _dtype(points[0][f])) for f in names
    }
    accuracy = np.asarray([r.val_accuracy for r in reports], np.float32)
    finite = np.asarray([not r.diverged for r in reports])
    key = jax.random.fold_in(jax.random.key(self.seed), k)
    source, values = exploit_explore(key, accuracy, finite, values, self.explore)
    new_points = [
      {**points[m], **{f: values[f][m].item() for f in names}}
      if source[m] != m
      else points[m]
      for m in range(len(points))
    ]
    return {'round': k + 1, 'points': new_points, 'source': source.tolist()}

  def remaining_steps(self, state: dict, num_iters: Sequence[int]) -> int:
    k = state['round']
    done = self.ends[k - 1] if k else 0
    return len(self.points) * (self.ends[-1] - done)

  def summary(self, state: dict) -> dict:
    return {'search': 'pbt', 'intervals': self.ends, 'explored': list(self.schedule)}

  def fingerprint(self) -> dict:
    return {
      'name': self.name,
      'points': self.points,
      'ends': self.ends,
      'explore': list(self.explore),
      'seed': self.seed,
    }


def _varies(points: Sequence[dict], field: str) -> bool:
  return len({p[field] for p in points}) > 1


def _dtype(value) -> type:
  return np.int32 if isinstance(value, int) else np.float32
