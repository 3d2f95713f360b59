"""What a self-checking checkpoint costs: checksum, save and read-back times.

  .venv/bin/python bench/checkpoint_cost.py [--models=12] [--hidden=500] [--repeats=5]

Times `checkpoint.save` (SHA-256 of every array, `.npz`, fsync, rename) and
`checkpoint.read` (load and verify) on the state of a sweep chunk of MODELS
models of hidden size HIDDEN, medians of REPEATS, in a temporary directory.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlp import checkpoint  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', type=int, default=12)
  parser.add_argument('--hidden', type=int, default=500)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  m, h = args.models, args.hidden
  params = {
    'W1': rng.random((m, 784, h), np.float32),
    'b1': rng.random((m, h), np.float32),
    'W2': rng.random((m, h, 10), np.float32),
    'b2': rng.random((m, 10), np.float32),
  }
  size = sum(x.nbytes for x in params.values())
  times = {'checksum': [], 'save': [], 'read': []}
  with tempfile.TemporaryDirectory() as folder:
    directory = Path(folder)
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      checkpoint._checksum({f'state/{k}': v for k, v in params.items()})
      t1 = time.perf_counter()
      path = checkpoint.save(directory, params, {'config': {}}, keep=2)
      t2 = time.perf_counter()
      checkpoint.read(path)
      t3 = time.perf_counter()
      for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
        times[name].append(seconds)
  print(f'{m} models x H {h}: {size / 1e6:.1f} MB of params')
  for name, values in times.items():
    seconds = statistics.median(values)
    print(f'{name:9s} {seconds * 1e3:8.1f} ms  ({size / seconds / 1e6:6.0f} MB/s)')


if __name__ == '__main__':
  main()
