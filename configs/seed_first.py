"""The course's first configuration: H 100, lr 1e-3, lambda 1e-3, 1000 iterations.

  python main.py --config=configs/seed_first.py --workdir=runs/seed_first

With the tiny init (std 1e-4) and a small step size the network barely leaves
its starting point in 1000 iterations: about 0.105 validation accuracy, as the
course reports (chance is 0.1).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.hidden_size = 100
  config.learning_rate = 1e-3
  config.l2_reg = 1e-3
  config.num_iters = 1000
  return config
