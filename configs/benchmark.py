"""The accelerator benchmark: training steps against the device's matmul peak.

  python main.py --mode=benchmark --config=configs/benchmark.py --workdir=runs/benchmark

Times the default configuration (H 300, batch 200) alone and as 27 vmapped
models, and a few larger shapes, then writes benchmark.json and prints a table
(docs/performance.md has this machine's numbers).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.benchmark = ml_collections.ConfigDict(
    {
      'hidden_sizes': (300, 1024),
      'batch_sizes': (200, 1000),
      'num_models': (1, 27),
      'steps': 4,  # first guess of the timed stretch (doubled until it dwarfs fixed costs)
      'repeats': 5,  # timings of each length (the fastest kept; the median reported too)
      'min_seconds': 0.25,  # the timed stretches are lengthened to at least this
      'peak_matmul_size': 2048,
      'dtype': 'float32',
      'matmul_precision': 'default',  # or 'float32' (full), 'tensorfloat32', 'bfloat16'
    }
  )
  return config
