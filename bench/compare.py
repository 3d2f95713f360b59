"""One command, timed in this checkout and in another commit, alternately.

  .venv/bin/python bench/compare.py --base=HEAD~1 --repeats=3 -- \\
    main.py --mode=sweep --config=configs/sweep.py --config.write_plots=False

Checks the base commit out into a temporary git worktree and runs the command
(with `--workdir=` a fresh folder, and `--compilation_cache_dir=` off, so each
run compiles) there and here in turn, base first, `--repeats` times each. It
prints each run's wall time, the medians and their ratio; for
`--mode=benchmark` also each row's `step_seconds` from `benchmark.json`, and
the best of the repeats. Both sides run with this checkout's Python, so they
differ only in the code. Results: docs/performance.md.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

_BASE = flags.DEFINE_string('base', 'HEAD~1', 'The commit to compare against.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Runs of each side.')

REPO = Path(__file__).resolve().parent.parent


def _run(checkout: Path, command: list[str], workdir: Path) -> tuple[float, list]:
  """Runs `command` in `checkout`; returns wall seconds and benchmark rows."""
  args = [sys.executable, *command, f'--workdir={workdir}', '--compilation_cache_dir=']
  started = time.perf_counter()
  result = subprocess.run(args, cwd=checkout, capture_output=True, text=True)
  seconds = time.perf_counter() - started
  if result.returncode != 0:
    sys.exit(
      f'Error: {" ".join(command)} failed in {checkout}:\n{result.stderr[-2000:]}'
    )
  benchmark = workdir / 'benchmark.json'
  rows = json.loads(benchmark.read_text()) if benchmark.is_file() else []
  return seconds, rows


def main(argv: list[str]) -> None:
  command = argv[1:]
  if not command:
    sys.exit('Error: give the command after --, e.g. -- main.py --config=...')
  with tempfile.TemporaryDirectory(prefix='compare_') as tmp:
    tmp = Path(tmp)
    base = tmp / 'base'
    subprocess.run(
      ['git', 'worktree', 'add', '--detach', str(base), _BASE.value],
      cwd=REPO,
      check=True,
      capture_output=True,
    )
    try:
      times = {'base': [], 'this': []}
      rows = {'base': [], 'this': []}
      for i in range(_REPEATS.value):
        for side, checkout in (('base', base), ('this', REPO)):
          seconds, side_rows = _run(checkout, command, tmp / f'{side}{i}')
          times[side].append(seconds)
          rows[side].append(side_rows)
          steps = ', '.join(f'{1e3 * r["step_seconds"]:.3f}' for r in side_rows)
          shown = f' (ms/step: {steps})' if steps else ''
          print(f'{side} run {i + 1}: {seconds:.2f} s{shown}', flush=True)
    finally:
      subprocess.run(
        ['git', 'worktree', 'remove', '--force', str(base)], cwd=REPO, check=False
      )
  medians = {side: statistics.median(t) for side, t in times.items()}
  print(f'base {_BASE.value}: median {medians["base"]:.2f} s')
  print(f'this checkout: median {medians["this"]:.2f} s')
  print(f'ratio this / base: {medians["this"] / medians["base"]:.3f}')
  if rows['this'] and rows['this'][0]:
    print('| H | batch | models | base ms/step (best) | this ms/step (best) | ratio |')
    print('|---|---|---|---|---|---|')
    for j, row in enumerate(rows['this'][0]):
      best = {
        side: min(r[j]['step_seconds'] for r in rows[side]) * 1e3 for side in rows
      }
      print(
        f'| {row["hidden_size"]} | {row["batch_size"]} | {row["num_models"]} | '
        f'{best["base"]:.3f} | {best["this"]:.3f} | {best["this"] / best["base"]:.3f} |'
      )


if __name__ == '__main__':
  app.run(main)
