"""Successive halving over 128 random configurations of the course's space.

  python main.py --mode=sweep --config=configs/halving.py --workdir=runs/halving

H in {100, 200, 300, 500}, learning rate log-uniform in [1e-3, 1], lambda
log-uniform in [1e-5, 1e-2], decay in [0.9, 1.0] (log-uniform, nearly
uniform there), batch 200. Rungs end at 125, 500 and 2000 steps (eta 4):
128 models train 125 steps, the best 32 go on to 500, the best 8 to 2000,
about a sixth of the model-steps of training all 128 for 2000 steps.
`bench/halving.py` compares it with that full search (`--config.search=random`
trains the same 128 draws to the end); docs/performance.md has the numbers.
"""

import ml_collections

from configs import sweep


def get_config() -> ml_collections.ConfigDict:
  config = sweep.get_config()
  config.sweep.hidden_size = (100, 200, 300, 500)
  config.sweep.learning_rate = ('log', 1e-3, 1.0)
  config.sweep.l2_reg = ('log', 1e-5, 1e-2)
  config.sweep.lr_decay = ('log', 0.9, 1.0)
  config.search = 'halving'
  config.num_samples = 128
  config.eta = 4
  config.min_iters = 125
  config.max_iters = 2000
  config.num_iters = 2000
  return config
