"""`--mode=sweep`: a search over many models, trained vmapped at once.

The config's `sweep` gives the members (a grid or random draws) and its
`search` the strategy (grid, random, halving, Hyperband, population-based
training). This mode loads the data and hands both to the public search API
(`mlp.search.api.run`), whose population driver trains the strategy's
rounds, grouped by shape, chunked and sharded across devices and hosts, and
checkpointed, so a killed search resumes where it stopped.
"""

import ml_collections

from mlp import data, distributed, report
from mlp.search import api, space


def run(config: ml_collections.ConfigDict, workdir: str, restart: bool = False) -> dict:
  """Runs the search of `config` and writes the sweep's workdir files.

  Writes `config.json`, `results.csv`, `results.md` (best first),
  `curves.jsonl` (each model's learning curves), `summary.json`,
  `best_params.npz`, `report.md`, `plots/`, `tensorboard/` and
  `checkpoints/` (resumed when the same command runs again).

  Args:
    config: a sweep config (see `configs/sweep.py`).
    workdir: output directory.
    restart: delete a previous sweep's outputs in `workdir` and start over.

  Returns:
    The summary dict.
  """
  space.swept_values(config)  # a config without `sweep` is refused first
  if config.write_plots and distributed.is_writer():
    report.prefetch('mlp.sweep_plots')  # matplotlib: imported while the sweep runs
  dataset = data.from_config(config)
  return api.run(config, dataset, workdir, restart=restart).summary
