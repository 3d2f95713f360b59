"""Population-based training against random search with the same budget.

  .venv/bin/python bench/pbt.py [--config=configs/pbt.py] [--seeds=0,1,2] [--out=runs/pbt_bench]

For each seed, as whole processes on the same machine one after the other:
`python main.py --mode=sweep --config.search=random` (the config's
`num_samples` draws, fixed hyperparameters) and `--config.search=pbt` (the
same draws as a population, exploiting and exploring every `pbt_interval`
steps): the same population size and total model-steps. Prints a Markdown
table of each run's best member (val and test accuracy) and wall time, the
means over the seeds, and whether PBT's mean best beats random search's.
Results: docs/performance.md, "Population-based training".
"""

import json
import sys
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.search_run import run_search  # noqa: E402

_CONFIG = flags.DEFINE_string('config', 'configs/pbt.py', 'The PBT config.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (draws, inits, batches).')
_OUT = flags.DEFINE_string('out', 'runs/pbt_bench', 'Where the workdirs go.')


def main(argv):
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  extra = argv[1:]  # --config.FIELD=VALUE overrides for every run
  lines = [
    '| seed | search | members | best val acc | its test acc | model-steps | wall s |',
    '|---|---|---|---|---|---|---|',
  ]
  best = {'random': [], 'pbt': []}
  for seed in _SEEDS.value:
    for search in ('random', 'pbt'):
      summary, seconds = run_search(
        _CONFIG.value,
        search,
        out / f'{search}_{seed}',
        [f'--config.seed={seed}', *extra],
      )
      steps = summary.get('model_steps') or summary['num_models'] * int(
        json.loads((out / f'{search}_{seed}' / 'config.json').read_text())['num_iters']
      )
      best[search].append(summary['best']['val_accuracy'])
      lines.append(
        f'| {seed} | {search} | {summary["num_models"]} '
        f'| {summary["best"]["val_accuracy"]:.4f} '
        f'| {summary["best"]["test_accuracy"]:.4f} | {steps:,} | {seconds:.1f} |'
      )
  means = {k: sum(v) / len(v) for k, v in best.items()}
  lines.append('')
  lines.append(
    f'mean best val acc: random {means["random"]:.4f}, pbt {means["pbt"]:.4f}; '
    f'PBT beats random search: {"yes" if means["pbt"] > means["random"] else "NO"}'
  )
  report = '\n'.join(lines)
  print(report)
  (out / 'pbt_bench.md').write_text(report + '\n')
  from mlp import search_plots

  print('plot:', search_plots.write_search_plots(out / f'pbt_{_SEEDS.value[0]}')[0])


if __name__ == '__main__':
  app.run(main)
