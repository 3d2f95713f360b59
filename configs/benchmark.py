"""The accelerator benchmark: training steps against the device's matmul peak.

  python main.py --mode=benchmark --config=configs/benchmark.py --workdir=runs/benchmark
  python main.py --mode=benchmark --config=configs/benchmark.py:full --workdir=runs/benchmark

The default times the default configuration (H 300, batch 200) alone and as 27
vmapped models: about 30 s on a 2-core CPU. `:full` adds H 1024 and batch
1000, eight rows: about 3 minutes on a 2-core CPU.
Each writes benchmark.json and prints a table (docs/performance.md has this
machine's numbers and the measured times).
"""

import ml_collections

from configs import default

VARIANTS = {
  None: {'hidden_sizes': (300,), 'batch_sizes': (200,)},
  'full': {'hidden_sizes': (300, 1024), 'batch_sizes': (200, 1000)},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The benchmark config; `arg` (after `:` in `--config=FILE:ARG`) names a variant."""
  if arg not in VARIANTS:
    names = ' or '.join(f'configs/benchmark.py:{name}' for name in VARIANTS if name)
    raise ValueError(
      f'no benchmark variant {arg!r}: use configs/benchmark.py (the default) or {names}'
    )
  config = default.get_config()
  config.benchmark = ml_collections.ConfigDict(
    {
      **VARIANTS[arg],
      'num_models': (1, 27),
      'steps': 4,  # first guess of the timed stretch (doubled until it dwarfs fixed costs)
      'repeats': 5,  # timed runs of each length (the fastest and the median reported)
      'min_seconds': 0.25,  # the timed stretches are lengthened to at least this
      'peak_matmul_size': 2048,
      'dtype': 'float32',
      'matmul_precision': 'default',  # or 'float32' (full), 'tensorfloat32', 'bfloat16'
    }
  )
  return config
