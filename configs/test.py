"""A tiny configuration for tests: a few seconds end to end, real MNIST.

  python main.py --config=configs/test.py --workdir=/tmp/mlp_test

H 16, batch 32, lr 0.3, 60 iterations evaluated every 20: about 0.74 val accuracy.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.hidden_size = 16
  config.batch_size = 32
  config.num_iters = 60
  config.eval_every = 20
  config.train_eval_size = 500
  config.init_std = 1e-2
  config.learning_rate = 0.3
  return config
