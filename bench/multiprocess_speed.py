"""A sweep in 1 process against the same sweep in 2 processes (jax.distributed).

  .venv/bin/python bench/multiprocess_speed.py [--num_iters=1000]

Runs one grid (H 100 x 4 learning rates x 3 lambdas = 12 models) as
  1 process x 1 device, 1 process x 4 fake CPU devices, 2 processes x 2 fake
  CPU devices (gloo collectives, coordinator on 127.0.0.1),
each a `python main.py --mode=sweep` (`mlp/modes/sweep.py`: the model axis
split over every process's devices by `mlp/model_axis.py`, the processes joined
by `mlp/distributed.py`), checks that the three results tables agree, and
prints wall times and model-examples per second. On one machine the processes
share its cores, so this measures the overhead of the multi-process runtime,
not a speed-up. Results: docs/performance.md, "Several processes".
"""

import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
_ITERS = flags.DEFINE_integer('num_iters', 1000, 'Iterations per model.')


def _args(workdir: Path) -> list[str]:
  return [
    sys.executable,
    'main.py',
    '--mode=sweep',
    '--config=configs/sweep.py',
    f'--workdir={workdir}',
    f'--config.num_iters={_ITERS.value}',
    '--config.sweep.hidden_size=(100,)',
  ]


def _launch(workdir: Path, devices: int, processes: int) -> float:
  env = {**os.environ, 'JAX_NUM_CPU_DEVICES': str(devices), 'JAX_PLATFORMS': 'cpu'}
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  extra = lambda i: (  # noqa: E731
    [
      f'--coordinator_address=127.0.0.1:{port}',
      f'--num_processes={processes}',
      f'--process_id={i}',
    ]
    if processes > 1
    else []
  )
  t0 = time.perf_counter()
  running = [
    subprocess.Popen(
      [*_args(workdir), *extra(i)],
      cwd=REPO,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(processes)
  ]
  for p in running:
    _, err = p.communicate()
    if p.returncode:
      raise SystemExit(err[-2000:])
  return time.perf_counter() - t0


def main(argv):
  del argv
  rows, tables = [], []
  with tempfile.TemporaryDirectory() as tmp:
    for devices, processes in ((1, 1), (4, 1), (2, 2)):
      workdir = Path(tmp) / f'{processes}x{devices}'
      wall = _launch(workdir, devices, processes)
      summary = json.loads((workdir / 'summary.json').read_text())
      with open(workdir / 'results.csv') as f:
        tables.append(
          {
            (r['learning_rate'], r['l2_reg']): float(r['val_accuracy'])
            for r in csv.DictReader(f)
          }
        )
      rows.append((processes, devices, wall, summary))
  gap = max(abs(t[k] - tables[0][k]) for t in tables for k in t)
  print(
    f'12 models x {_ITERS.value} iterations; largest val accuracy difference: {gap:.4f}'
  )
  print(
    '| processes x devices | wall s | compile s | model-examples/s while training |'
  )
  print('|---|---|---|---|')
  for processes, devices, wall, summary in rows:
    print(
      f'| {processes} x {devices} | {wall:.1f} | {summary["compile_seconds"]:.1f} | '
      f'{summary["model_examples_per_second"]:,.0f} |'
    )


if __name__ == '__main__':
  app.run(main)
