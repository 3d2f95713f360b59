"""The first augmented search (kept for the record; configs/sweep_augmented.py followed).

  python main.py --mode=sweep --config=configs/sweep_augmented_round1.py \\
    --workdir=runs/sweep_augmented_round1

H 800 for 60 epochs with the augmentation of configs/sweep_augmented.py;
learning rate {1e-3, 2e-3} x hidden dropout {0, 0.3}. Best val 0.9928 (lr 2e-3,
no dropout), with train accuracy no higher than val: underfitting, which is why
the second round has more units, more epochs and no dropout.
"""

import ml_collections

from configs import sweep_augmented


def get_config() -> ml_collections.ConfigDict:
  config = sweep_augmented.get_config()
  config.hidden_size = 800
  config.num_iters = 60 * (55000 // 128)
  config.sweep.learning_rate = (1e-3, 2e-3)
  config.sweep.dropout = (0.0, 0.3)
  return config
