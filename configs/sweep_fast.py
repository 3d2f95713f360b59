"""The search behind configs/fast.py: shortest training that keeps val high.

  python main.py --mode=sweep --config=configs/sweep_fast.py --workdir=runs/sweep_fast

Adam, He init, epoch permutation, warm-up + cosine, no regularization; hidden
size {512, 1024} x batch {256, 512} x steps {215, 320, 430, 645} x learning
rate {8e-3, 1.2e-2, 1.6e-2}: 48 models, about 3 minutes on a 2-core CPU.
Batch 512 and the highest rate did best per step; the cheapest such rows, and
two steps further along that trend (H 384, lr 2e-2), were then timed as whole
runs over seeds 0-2 (table in docs/performance.md), and configs/fast.py is the fastest
whose worst seed reached val 0.983.
"""

import ml_collections

from configs import fast, sweep


def get_config() -> ml_collections.ConfigDict:
  config = fast.get_config()
  search = sweep.get_config()
  for field in ('sweep', 'search', 'num_samples', 'models_per_chunk'):
    config[field] = search[field]
  for field in config.sweep:
    config.sweep[field] = ()
  config.sweep.hidden_size = (512, 1024)
  config.sweep.batch_size = (256, 512)
  config.sweep.num_iters = (215, 320, 430, 645)
  config.sweep.learning_rate = (8e-3, 1.2e-2, 1.6e-2)
  config.eval_every = max(config.sweep.num_iters)
  return config
