"""The search that chose configs/best_plain.py (no augmentation), on val.

  python main.py --mode=sweep --config=configs/sweep_plain.py --workdir=runs/sweep_plain

H 800, Adam, He init, epoch permutation, batch 128, warm-up + cosine over 30
epochs; learning rate {1e-3, 2e-3} x hidden dropout {0.3, 0.5}. Four models,
about 8 minutes on a 2-core CPU.
"""

import ml_collections

from configs import sweep


def get_config() -> ml_collections.ConfigDict:
  config = sweep.get_config()
  config.hidden_size = 800
  config.init = 'he'
  config.optimizer = 'adam'
  config.sampling = 'permutation'
  config.batch_size = 128
  config.num_iters = 30 * (55000 // 128)
  config.lr_schedule = 'cosine'
  config.warmup_iters = 500
  config.l2_reg = 0.0
  config.eval_every = 5 * (55000 // 128)
  config.sweep.hidden_size = ()
  config.sweep.learning_rate = (1e-3, 2e-3)
  config.sweep.l2_reg = ()
  config.sweep.dropout = (0.3, 0.5)
  return config
