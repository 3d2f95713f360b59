"""Reproduces the course's table: its four configurations, each over 3 seeds.

  .venv/bin/python bench/reproduce.py [--seeds=0,1,2] [--out=runs/reproduce]

Trains each config with `--mode=train`'s own function (one process; runs with
the same shapes reuse one compiled program) and prints a Markdown table of
validation and test accuracy, mean and spread (min-max) over the seeds, next
to the course's numbers.
"""

import importlib
import statistics
import sys
from pathlib import Path

from absl import app, flags, logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mlp import run  # noqa: E402

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds to train each config with.')
_OUT = flags.DEFINE_string('out', 'runs/reproduce', 'Where the workdirs go.')

# (config module, the course's reported validation accuracy)
ROWS = [
  ('seed_first', 0.105),
  ('default', 0.940),
  ('model_b', 0.939),
  ('model_c', 0.939),
]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  lines = [
    '| config | H | lr | lambda | iters | val acc (course) | val acc, mean [min, max] | test acc, mean [min, max] | train s/run |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for name, reported in ROWS:
    summaries = []
    for seed in _SEEDS.value:
      config = importlib.import_module(f'configs.{name}').get_config()
      config.seed = int(seed)
      summaries.append(
        run.train_and_evaluate(config, f'{_OUT.value}/{name}/seed{seed}')
      )
    val = [s['val_accuracy'] for s in summaries]
    test = [s['test_accuracy'] for s in summaries]
    seconds = statistics.mean(s['train_seconds'] for s in summaries)
    lines.append(
      f'| {name} | {config.hidden_size} | {config.learning_rate:g} | {config.l2_reg:g} | '
      f'{config.num_iters} | {reported:.3f} | {statistics.mean(val):.4f} '
      f'[{min(val):.4f}, {max(val):.4f}] | {statistics.mean(test):.4f} '
      f'[{min(test):.4f}, {max(test):.4f}] | {seconds:.2f} |'
    )
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
