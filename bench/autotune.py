"""Search to accuracy: configs/autotune.py against configs/best_plain.py alone.

  .venv/bin/python bench/autotune.py [--out=runs/autotune_bench]

Runs, one after the other on the same machine, as whole processes, each
afresh (`--restart`) with an empty compilation cache of its own and no plots:
  1. `python main.py --config=configs/best_plain.py` (one chosen model);
  2. `python main.py --mode=sweep --config=configs/autotune.py` (successive
     halving over best_plain's space, from nothing chosen).
Prints a Markdown table (wall time, the winner, its val and test accuracy)
and whether the goal of issue 23 holds: the search's winner at >= 0.985 test
accuracy in at most 4x the wall time of best_plain alone. Results:
docs/performance.md, "Search to accuracy".
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
_OUT = flags.DEFINE_string('out', 'runs/autotune_bench', 'Where the workdirs go.')


def timed(args: list[str], workdir: Path) -> tuple[dict, float]:
  """`main.py ARGS --workdir=WORKDIR --restart`: its summary and wall seconds."""
  with tempfile.TemporaryDirectory() as cache:
    command = [
      sys.executable,
      'main.py',
      *args,
      f'--workdir={workdir}',
      '--restart',
      '--config.write_plots=False',
    ]
    started = time.perf_counter()
    env = {**os.environ, 'XDG_CACHE_HOME': cache}
    subprocess.run(command, cwd=REPO, check=True, env=env)
    seconds = time.perf_counter() - started
  return json.loads((workdir / 'summary.json').read_text()), seconds


def main(argv):
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  alone, alone_s = timed(['--config=configs/best_plain.py'], out / 'best_plain')
  search, search_s = timed(
    ['--mode=sweep', '--config=configs/autotune.py', *argv[1:]], out / 'autotune'
  )
  best = search['best']
  print('| run | wall s | lr | dropout | steps | val acc | test acc |')
  print('|---|---|---|---|---|---|---|')
  print(
    f'| best_plain alone | {alone_s:.1f} | 0.002 | 0.5 | {alone["steps"]} | '
    f'{alone["val_accuracy"]:.4f} | {alone["test_accuracy"]:.4f} |'
  )
  print(
    f'| autotune (halving, {search["num_models"]} draws) | {search_s:.1f} | '
    f'{best["learning_rate"]:.3g} | {best["dropout"]:.3g} | {best["steps"]} | '
    f'{best["val_accuracy"]:.4f} | {best["test_accuracy"]:.4f} |'
  )
  ratio = search_s / alone_s
  met = best['test_accuracy'] >= 0.985 and ratio <= 4.0
  print(
    f'\nautotune / best_plain wall time: {ratio:.2f}x (goal <= 4x); winner test '
    f'accuracy {best["test_accuracy"]:.4f} (goal >= 0.985): '
    f'{"met" if met else "not met"}'
  )


if __name__ == '__main__':
  app.run(main)
