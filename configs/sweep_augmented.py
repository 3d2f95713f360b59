"""The search that chose configs/best_augmented.py (on-device augmentation), on val.

  python main.py --mode=sweep --config=configs/sweep_augmented.py --workdir=runs/sweep_augmented

configs/sweep_plain.py's recipe, for 60 epochs, with every training image
randomly distorted each time it is drawn: affine (rotation +-10 degrees, zoom
+-10%, shift +-2 px) and Simard et al.'s elastic distortions (alpha 34,
sigma 4). Learning rate {1e-3, 2e-3} x hidden dropout {0, 0.3}.
"""

import ml_collections

from configs import sweep_plain


def get_config() -> ml_collections.ConfigDict:
  config = sweep_plain.get_config()
  config.num_iters = 60 * (55000 // 128)
  config.eval_every = 10 * (55000 // 128)
  config.augment_rotation = 10.0
  config.augment_scale = 0.1
  config.augment_translation = 2.0
  config.elastic_alpha = 34.0
  config.elastic_sigma = 4.0
  config.sweep.learning_rate = (1e-3, 2e-3)
  config.sweep.dropout = (0.0, 0.3)
  return config
