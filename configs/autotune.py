"""From a search space to a >= 98.5% test model in one command: successive
halving over configs/best_plain.py's space.

  python main.py --mode=sweep --config=configs/autotune.py --workdir=runs/autotune

784-800-10 with best_plain's recipe (He init, Adam, 500 warm-up steps and a
cosine over 30 epochs of permuted batches of 128), searched rather than
chosen: 8 random draws of the learning rate (log-uniform in [5e-4, 5e-3])
and the hidden dropout (uniform in [0.2, 0.6]), in rungs of 1/8, 1/4, 1/2
and all of the 30 epochs (eta 2): 8, 4, 2 and 1 models, about 2.5 runs'
worth of steps. The winner trains the whole schedule, as a run alone would.
`bench/autotune.py` times it against configs/best_plain.py as whole
processes (docs/performance.md, "Search to accuracy").
"""

import ml_collections

from configs import sweep_plain


def get_config() -> ml_collections.ConfigDict:
  config = sweep_plain.get_config()
  config.sweep.learning_rate = ('log', 5e-4, 5e-3)
  config.sweep.dropout = ('linear', 0.2, 0.6)
  config.search = 'halving'
  config.num_samples = 8
  config.eta = 2
  config.max_iters = config.num_iters
  config.min_iters = config.num_iters // 8
  return config
