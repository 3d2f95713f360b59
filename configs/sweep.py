"""The course's automated search as one program: 36 models trained at once.

  python main.py --mode=sweep --config=configs/sweep.py --workdir=runs/sweep

Hidden size {100, 200, 300} x learning rate {1e-3, 1e-2, 1e-1, 0.5} x lambda
{1e-4, 1e-3, 1e-2}, 2000 iterations, batch 200, decay 0.95, one seed. The
course's table rows are in this grid; its best reach about 0.94 validation
accuracy. Any field of `sweep` can be set from the command line, e.g.
`--config.sweep.seed='(0, 1, 2)'`; an empty tuple means "not swept". A field
takes values, `(a, b, c)`, or a range: `('log', low, high)`, `('linear', low,
high)` or `('int', low, high)` (mlp/search/space.py); a grid needs values.
"""

import ml_collections

from configs import default
from mlp import hparams


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  # Every sweepable field (mlp/hparams.py); an empty tuple means "not swept".
  config.sweep = ml_collections.ConfigDict({name: () for name in hparams.SWEEPABLE})
  config.sweep.hidden_size = (100, 200, 300)
  config.sweep.learning_rate = (1e-3, 1e-2, 1e-1, 5e-1)
  config.sweep.l2_reg = (1e-4, 1e-3, 1e-2)
  # 'grid': the Cartesian product of the values; 'random': `num_samples`
  # draws, each field uniformly among its values or from its range;
  # 'halving': successive halving over the grid (or `num_samples` draws):
  # rungs of max_iters / eta**k, ..., max_iters steps (the first at least
  # min_iters), each keeping the best 1/eta of its models by val accuracy;
  # 'hyperband': Li et al.'s brackets of such searches, of random draws;
  # 'pbt': population-based training of the grid (or the draws): every
  # pbt_interval steps the worst pbt_fraction copy the best, then their
  # pbt_explore fields (default: every swept float field) are multiplied by
  # pbt_perturb or its inverse, or redrawn (chance pbt_resample) within the
  # swept range (or between the smallest and largest of the swept values).
  config.search = 'grid'
  config.num_samples = 0
  for field in hparams.SEARCH:  # eta, min_iters, max_iters, pbt_*
    config[field.name] = field.default
  config.pbt_explore = ()
  # Models trained per call (0 = as many as fit in half the device memory).
  config.models_per_chunk = 0
  return config
