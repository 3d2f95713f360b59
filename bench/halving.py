"""Successive halving against training every configuration to the end.

  .venv/bin/python bench/halving.py [--config=configs/halving.py] [--out=runs/halving_bench]

Runs, one after the other on the same machine, as whole processes:
  1. the full search: `python main.py --mode=sweep --config.search=random`,
     the config's `num_samples` random draws each trained for `max_iters`
     steps;
  2. successive halving over the same draws (`--config.search=halving`).
Each starts afresh (`--restart`) with its own empty compilation cache, and
writes no plots while timed (the search plot is drawn afterwards). Prints a
Markdown table: the best model of each (val and test accuracy), model-steps,
wall time, compile time, and the ratios, then whether the goals of issue 16
hold: the halving winner within 0.002 val accuracy of the full search's
best, at most a quarter of its model-steps and a third of its wall time.
Results: docs/performance.md, "Successive halving".
"""

import json
import sys
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.search_run import run_search  # noqa: E402

_CONFIG = flags.DEFINE_string('config', 'configs/halving.py', 'The halving config.')
_OUT = flags.DEFINE_string('out', 'runs/halving_bench', 'Where the workdirs go.')


def main(argv):
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  extra = argv[1:]  # --config.FIELD=VALUE overrides for both runs
  halving, halving_s = run_search(_CONFIG.value, 'halving', out / 'halving', extra)
  full, full_s = run_search(_CONFIG.value, 'random', out / 'full', extra)
  full_steps = full['num_models'] * halving['rungs'][-1]
  rows = [
    ('full search', full, full_steps, full_s),
    ('halving', halving, halving['model_steps'], halving_s),
  ]
  lines = [
    '| search | models | best val acc | its test acc | model-steps | wall s '
    '| compile s | model-steps vs full | wall vs full |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for name, summary, steps, seconds in rows:
    lines.append(
      f'| {name} | {summary["num_models"]} | {summary["best"]["val_accuracy"]:.4f} '
      f'| {summary["best"]["test_accuracy"]:.4f} | {steps:,} | {seconds:.1f} '
      f'| {summary["compile_seconds"]:.1f} | {steps / full_steps:.3f} '
      f'| {seconds / full_s:.3f} |'
    )
  gap = full['best']['val_accuracy'] - halving['best']['val_accuracy']
  goals = {
    'winner within 0.002 val acc': gap <= 0.002,
    'model-steps <= 1/4': halving['model_steps'] <= full_steps / 4,
    'wall time <= 1/3': halving_s <= full_s / 3,
  }
  lines.append('')
  lines.append(f'rungs {halving["rungs"]}, models per rung {halving["rung_sizes"]}')
  lines.append(f'best of full: {json.dumps(full["best"])}')
  lines.append(f'best of halving: {json.dumps(halving["best"])}')
  lines += [f'{goal}: {"yes" if ok else "NO"}' for goal, ok in goals.items()]
  report = '\n'.join(lines)
  print(report)
  (out / 'halving_bench.md').write_text(report + '\n')
  from mlp import search_plots

  print('plot:', search_plots.write_search_plots(out / 'halving')[0])


if __name__ == '__main__':
  app.run(main)
