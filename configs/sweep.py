"""The course's automated search as one program: 36 models trained at once.

  python main.py --mode=sweep --config=configs/sweep.py --workdir=runs/sweep

Hidden size {100, 200, 300} x learning rate {1e-3, 1e-2, 1e-1, 0.5} x lambda
{1e-4, 1e-3, 1e-2}, 2000 iterations, batch 200, decay 0.95, one seed. The
course's table rows are in this grid; its best reach about 0.94 validation
accuracy. Any field of `sweep` can be set from the command line, e.g.
`--config.sweep.seed='(0, 1, 2)'`; an empty tuple means "not swept".
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.sweep = ml_collections.ConfigDict(
    {
      'hidden_size': (100, 200, 300),
      'learning_rate': (1e-3, 1e-2, 1e-1, 5e-1),
      'l2_reg': (1e-4, 1e-3, 1e-2),
      'num_iters': (),
      'lr_decay': (),
      'init_std': (),
      'seed': (),
      'batch_size': (),
      'momentum': (),
      'weight_decay': (),
      'dropout': (),
      'label_smoothing': (),
      'warmup_iters': (),
    }
  )
  # 'grid': the Cartesian product; 'random': `num_samples` draws, float fields
  # log-uniform in (low, high), integer fields uniform over their tuple.
  config.search = 'grid'
  config.num_samples = 0
  # Models trained per call (0 = as many as fit in half the device memory).
  config.models_per_chunk = 0
  return config


def without_sweep(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A sweep config's base, as a plain training config (the sweep fields removed)."""
  for field in ('sweep', 'search', 'num_samples', 'models_per_chunk'):
    del config[field]
  return config
