"""Trains configs over several seeds and tabulates val and test accuracy.

  .venv/bin/python bench/reproduce.py                      # the course's table
  .venv/bin/python bench/reproduce.py --configs=best_plain,best_augmented

Trains each config with `--mode=train`'s own function (`mlp/modes/train.py`'s
`run`; one process, so runs with the same shapes reuse one compiled program)
and prints a Markdown table of validation and test accuracy, mean and spread
(min-max) over the seeds, the wall time of a run, and the reference number
beside it (the course's validation accuracy, or the published test accuracy).
Its tables are the README's "Results" (accuracy over seeds, not a speed
measurement; docs/performance.md holds those).
"""

import importlib
import statistics
import sys
import time
from pathlib import Path

from absl import app, flags, logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mlp.modes import train  # noqa: E402

_CONFIGS = flags.DEFINE_list(
  'configs', ['seed_first', 'default', 'model_b', 'model_c'], 'Config modules to train.'
)
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds to train each config with.')
_OUT = flags.DEFINE_string('out', 'runs/reproduce', 'Where the workdirs go.')

REFERENCES = {
  'seed_first': 'val 0.105 (course)',
  'default': 'val 0.940 (course)',
  'model_b': 'val 0.939 (course)',
  'model_c': 'val 0.939 (course)',
  'best_plain': 'test 0.984 (LeCun et al., 800 HU, cross-entropy)',
  'best_augmented': 'test 0.993 (Simard et al. 2003, 800 HU, elastic)',
}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  lines = [
    '| config | H | reference | val acc, mean [min, max] | test acc, mean [min, max] | '
    'wall s/run |',
    '|---|---|---|---|---|---|',
  ]
  for name in _CONFIGS.value:
    summaries, walls = [], []
    for seed in _SEEDS.value:
      config = importlib.import_module(f'configs.{name}').get_config()
      config.seed = int(seed)
      t0 = time.perf_counter()
      workdir = f'{_OUT.value}/{name}/seed{seed}'
      summaries.append(train.run(config, workdir, restart=True))
      walls.append(time.perf_counter() - t0)
    val = [s['val_accuracy'] for s in summaries]
    test = [s['test_accuracy'] for s in summaries]
    lines.append(
      f'| {name} | {config.hidden_size} | {REFERENCES.get(name, "")} | '
      f'{statistics.mean(val):.4f} [{min(val):.4f}, {max(val):.4f}] | '
      f'{statistics.mean(test):.4f} [{min(test):.4f}, {max(test):.4f}] | '
      f'{statistics.mean(walls):.1f} |'
    )
    print(lines[-1], flush=True)
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
