"""`--mode=train`: one model trained alone, through the public API.

This mode checks the config, loads its data and hands both to `api.train`
(`mlp/search/single.py`), with the MLP as the model. It writes
`config.json`, `metrics.jsonl` (one line per evaluation, appended as training
goes), the same curves as TensorBoard events in `tensorboard/`,
`checkpoints/`, `params.npz`, `summary.json`, `report.md` and `plots/`. A
workdir that holds checkpoints of the same config is resumed from the newest
one, with bitwise the same result as an uninterrupted run.
"""

import math
import time

import ml_collections

from mlp import data, hparams, report
from mlp.search import api


def run(config: ml_collections.ConfigDict, workdir: str, restart: bool = False) -> dict:
  """Trains one model as `config` says and writes the workdir files.

  Args:
    config: a training config (see `configs/default.py`).
    workdir: output directory (created if needed).
    restart: delete a previous run's outputs in `workdir` and start over.

  Returns:
    The summary dict (also written as `summary.json`).
  """
  started = time.perf_counter()
  hparams.validate(config)  # before the data loads
  if config.write_plots:
    # matplotlib takes a few tenths of a second to import: meanwhile, load.
    report.prefetch('mlp.plots')
  dataset = data.from_config(config)
  return api.train(config, dataset, workdir, restart=restart, started=started)


def divergence_message(config: ml_collections.ConfigDict, summary: dict) -> str:
  """The `Error:` line of a run that diverged: its loss and the field to lower."""
  start_loss = summary['start_loss']
  fix = hparams.divergence_fix(
    config, start_loss is not None and math.isfinite(start_loss)
  )
  return (
    f'training diverged (loss {summary["final_loss"]}) after {summary["steps"]} '
    f'steps: {fix}'
  )
