"""The plot of an adaptive search's workdir: `plots/search.png`.

Successive halving: each model's validation accuracy against its training
steps, the line ending at the rung where the model was dropped, coloured by
that rung, with the rung budgets marked. Hyperband: one such panel per
bracket. Population-based training: each explored hyperparameter of each
member over the steps, coloured by the member's final validation accuracy.
"""

from pathlib import Path

import numpy as np

from mlp import plots
from mlp import workdir as workdir_lib


def halving_axes(ax, records: list[dict], rungs: list[int], title: str) -> None:
  """Val accuracy over steps on `ax`, one line per model, coloured by its
  last rung; each rung's end marked with the number of models that reached it.

  Args:
    ax: a matplotlib Axes.
    records: `curves.jsonl`'s records (`curves` holds `step` and `val_accuracy`).
    rungs: the step at which each rung ends.
    title: the panel's title.
  """
  import matplotlib

  colours = matplotlib.colormaps['viridis'](np.linspace(0.0, 0.9, len(rungs)))
  for record in sorted(records, key=lambda r: len(r['curves']['step'])):
    steps = [0, *record['curves']['step']]
    accuracy = [np.nan, *record['curves']['val_accuracy']]
    rung = min(int(np.searchsorted(rungs, steps[-1])), len(rungs) - 1)
    ax.plot(
      steps,
      accuracy,
      color=colours[rung],
      alpha=0.4 + 0.6 * rung / max(len(rungs) - 1, 1),
      linewidth=0.8 + rung,
      marker=plots.point_marker(len(steps)),
      markersize=3,
    )
  for rung, end in enumerate(rungs):
    ax.axvline(end, color=colours[rung], linestyle=':', linewidth=1)
    reached = sum(r['curves']['step'][-1] >= end for r in records)
    ax.annotate(
      f'{reached}',
      (end, 1.0),
      xycoords=('data', 'axes fraction'),
      ha='right',
      va='top',
      fontsize=8,
    )
  ax.set_xlabel('training step')
  ax.set_ylabel('validation accuracy')
  ax.set_title(title, fontsize=10)


def pbt_plot(records: list[dict], fields: list[str], path: Path) -> Path:
  """Each member's schedule of each explored field (log scale), one panel per
  field, coloured by the member's final validation accuracy.

  Args:
    records: `curves.jsonl`'s records (`curves` holds `step`, `val_accuracy`
      and `hparams.FIELD`).
    fields: the explored fields.
    path: the PNG to write.
  """
  import matplotlib

  fig = plots.new_figure(7, 2.6 * len(fields) + 0.8)
  final = np.array([r['curves']['val_accuracy'][-1] for r in records], float)
  final = np.where(np.isfinite(final), final, np.nan)
  norm = matplotlib.colors.Normalize(np.nanmin(final), np.nanmax(final))
  colours = matplotlib.colormaps['viridis']
  order = np.argsort(np.nan_to_num(final, nan=-1.0))  # the best drawn last
  axes = [fig.add_subplot(len(fields), 1, i + 1) for i in range(len(fields))]
  for ax, field in zip(axes, fields, strict=True):
    for i in order:
      curves = records[i]['curves']
      # Each value holds from the interval's start: a step function.
      ax.step(
        [0, *curves['step']],
        [curves[f'hparams.{field}'][0], *curves[f'hparams.{field}']],
        where='pre',
        color=colours(norm(final[i])) if np.isfinite(final[i]) else 'grey',
        linewidth=1.2,
        alpha=0.8,
      )
    ax.set_yscale('log')
    ax.set_ylabel(field)
  axes[-1].set_xlabel('training step')
  axes[0].set_title(
    f"Population-based training: {len(records)} members' schedules", fontsize=10
  )
  fig.colorbar(
    matplotlib.cm.ScalarMappable(norm=norm, cmap=colours),
    ax=axes,
    label='final val accuracy',
  )
  return plots.save_figure(fig, path)


def write_search_plots(workdir: str | Path) -> list[Path]:
  """Writes `plots/search.png` for a workdir holding `summary.json` (with
  `brackets`, `batches` for TPE, or `explored` for PBT) and `curves.jsonl`."""
  workdir = Path(workdir)
  summary = workdir_lib.read_json(workdir / 'summary.json')
  records = plots.read_jsonl(workdir / 'curves.jsonl')
  if summary.get('search') == 'pbt':
    path = plots.plots_directory(workdir) / 'search.png'
    return [pbt_plot(records, summary['explored'], path)]
  brackets = summary.get('brackets') or summary['batches']  # halving's, or tpe's
  kind = 'Batch' if 'batches' in summary else 'Bracket'
  fig = plots.new_figure(7, 3.2 * len(brackets) + 1)
  for number, bracket in enumerate(brackets):
    low, high = bracket['models']
    members = [r for r in records if low <= r['model'] < high]
    title = (
      f'Successive halving of {len(members)} models (at each rung: models reaching it)'
      if len(brackets) == 1
      else f'{kind} {number}: {len(members)} models, rungs at '
      + ', '.join(map(str, bracket['rungs']))
    )
    halving_axes(
      fig.add_subplot(len(brackets), 1, number + 1), members, bracket['rungs'], title
    )
  return [plots.save_figure(fig, plots.plots_directory(workdir) / 'search.png')]
