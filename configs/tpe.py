"""Optuna's TPE over the course's space: 4 batches of 32, each through halving.

  pip install -e '.[optuna]'   # or: pip install optuna
  python main.py --mode=sweep --config=configs/tpe.py --workdir=runs/tpe

The space of `configs/halving.py` (H in {100, 200, 300, 500}, learning rate
log-uniform in [1e-3, 1], lambda in [1e-5, 1e-2], decay in [0.9, 1.0]), and
its budget: 128 models in all, the same rungs (125, 500 and 2000 steps, eta
4). Each batch of 32 is asked from TPE at once, trained vmapped through the
rungs (32 models train 125 steps, the best 8 go on to 500, the best 2 to
2000), and told to Optuna before the next batch is asked, so later batches
are proposed from what the earlier ones reached. The study is kept in the
workdir:

  optuna-dashboard sqlite:///runs/tpe/optuna.db   # pip install optuna-dashboard

or in Python, `optuna.load_study(study_name='search',
storage='sqlite:///runs/tpe/optuna.db')` for `optuna.visualization`.
"""

import ml_collections

from configs import halving


def get_config() -> ml_collections.ConfigDict:
  config = halving.get_config()
  config.search = 'tpe'
  config.num_samples = 128
  config.tpe_batch = 32
  return config
