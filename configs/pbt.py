"""Population-based training of 16 members over the course's space, H 100.

  python main.py --mode=sweep --config=configs/pbt.py --workdir=runs/pbt

16 random draws (learning rate log-uniform in [1e-3, 1], lambda in
[1e-5, 1e-2], decay in [0.9, 1.0]), 1000 steps of batch 200, evaluated every
100. Every 100 steps the worst quarter copies the best quarter's params,
optimizer state and hyperparameters, then perturbs each of the three (x or /
1.25, or a fresh draw with chance 0.25) within those ranges.
`--config.search=random` trains the same draws with fixed hyperparameters:
`bench/pbt.py` compares the two over three seeds (docs/performance.md).
"""

import ml_collections

from configs import sweep


def get_config() -> ml_collections.ConfigDict:
  config = sweep.get_config()
  config.hidden_size = 100
  config.sweep.hidden_size = ()
  config.sweep.learning_rate = ('log', 1e-3, 1.0)
  config.sweep.l2_reg = ('log', 1e-5, 1e-2)
  config.sweep.lr_decay = ('log', 0.9, 1.0)
  config.search = 'pbt'
  config.num_samples = 16
  config.num_iters = 1000
  config.eval_every = 100
  config.pbt_interval = 100
  return config
