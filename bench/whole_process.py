"""`main.py`'s default run as a whole process, against the same algorithm
without this project: plain NumPy and (where torch is importable) PyTorch.

  .venv/bin/python bench/whole_process.py [--repeats=3] \\
    [--torch_python=/tmp/torchenv/bin/python]

Times each command as a separate process, wall clock from start to exit,
alternated (one run of each in turn, `--repeats` rounds), and prints every
run, the medians and their ratios to `main.py`'s:

  - `main.py --config=configs/default.py` with its compilation cache off
    (a first run: it compiles), and with a warm cache (the cache filled by one
    untimed run first, as every later run of `make run` finds it); each writes
    everything a run writes: metrics, checkpoints, params, summary, plots,
    report;
  - `bench/plain_mlp.py --backend=numpy` and, when `--torch_python` (default:
    this interpreter) can import torch, `--backend=torch` with it: the same
    algorithm, data, schedule and evaluations (once per epoch, then val, test
    and train), no files written.

Hyperparameters come from `configs/default.py` for all of them. torch is no
requirement of this project: install it into a separate environment, e.g.
`python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy`.
Results: docs/performance.md, "The whole process".
"""

import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from configs import default  # noqa: E402

_REPEATS = flags.DEFINE_integer('repeats', 3, 'Rounds; each runs every command once.')
_TORCH_PYTHON = flags.DEFINE_string(
  'torch_python', sys.executable, 'A Python that can import torch (skipped if not).'
)
PLAIN_FIELDS = (
  'hidden_size',
  'learning_rate',
  'lr_decay',
  'l2_reg',
  'batch_size',
  'num_iters',
  'init_std',
  'seed',
  'train_eval_size',
)


def _run(name: str, command: list[str]) -> float:
  """Runs `command` in the repository; its wall seconds. Exits if it fails."""
  started = time.perf_counter()
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  seconds = time.perf_counter() - started
  if result.returncode != 0:
    sys.exit(f'Error: {name} failed:\n{result.stderr[-2000:]}')
  return seconds


def _machine() -> str:
  try:
    lscpu = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    model = next(
      line.split(':', 1)[1].strip()
      for line in lscpu.splitlines()
      if line.startswith('Model name')
    )
  except (OSError, StopIteration):
    model = platform.processor() or 'unknown CPU'
  import os

  return f'{model}, {os.cpu_count()} cores'


def main(argv: list[str]) -> None:
  del argv
  config = default.get_config()
  plain = [f'--{f}={config[f]}' for f in PLAIN_FIELDS]
  tmp = tempfile.TemporaryDirectory(prefix='whole_process_')
  out = Path(tmp.name)
  main_py = [sys.executable, 'main.py', '--config=configs/default.py']
  warm_cache = f'--compilation_cache_dir={out}/cache'
  commands = {
    'main.py, compile cache off': lambda i: [
      *main_py,
      f'--workdir={out}/cold{i}',
      '--compilation_cache_dir=',
    ],
    'main.py, warm compile cache': lambda i: [
      *main_py,
      f'--workdir={out}/warm{i}',
      warm_cache,
    ],
    'plain NumPy': lambda i: [
      sys.executable,
      'bench/plain_mlp.py',
      '--backend=numpy',
      *plain,
    ],
  }
  probe = subprocess.run(
    [_TORCH_PYTHON.value, '-c', 'import torch; print(torch.__version__)'],
    capture_output=True,
    text=True,
  )
  torch_version = probe.stdout.strip() if probe.returncode == 0 else None
  if torch_version:
    commands['PyTorch (eager)'] = lambda i: [
      _TORCH_PYTHON.value,
      'bench/plain_mlp.py',
      '--backend=torch',
      *plain,
    ]
  else:
    print(f'PyTorch skipped: {_TORCH_PYTHON.value} cannot import torch')
  _run('warming the cache', [*main_py, f'--workdir={out}/warmup', warm_cache])
  times = {name: [] for name in commands}
  for i in range(_REPEATS.value):
    for name, command in commands.items():
      seconds = _run(name, command(i))
      times[name].append(seconds)
      print(f'round {i + 1}: {name}: {seconds:.2f} s', flush=True)
  tmp.cleanup()

  import jax
  import numpy as np

  medians = {name: statistics.median(t) for name, t in times.items()}
  reference = medians['main.py, compile cache off']
  print(
    f'{_machine()}; JAX {jax.__version__}, NumPy {np.__version__}'
    + (f', torch {torch_version}' if torch_version else '')
    + f'; {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}'
  )
  print('| process | runs, s | median s | main.py (cache off) time / this time |')
  print('|---|---|---|---|')
  for name, runs in times.items():
    shown = ', '.join(f'{t:.1f}' for t in runs)
    print(
      f'| {name} | {shown} | {medians[name]:.1f} | {reference / medians[name]:.2f} |'
    )


if __name__ == '__main__':
  app.run(main)
