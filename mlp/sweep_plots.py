"""Plots of a `--mode=sweep` workdir, in `WORKDIR/plots/`.

`heatmap_h{H}.png`: validation accuracy over learning rate x lambda, one per
hidden size (a line plot when only one of them varies, a scatter plot for a
random search); `best_curves.png`: learning curves of the best few models.
"""

import csv
import math
from pathlib import Path

import matplotlib
import numpy as np
from absl import logging

from mlp import plots
from mlp import results as results_lib
from mlp import workdir as workdir_lib
from mlp.errors import UserError

NUM_BEST_CURVES = 5


def read_results(path: Path) -> list[dict]:
  """`results.csv` as dicts with ints, floats and bools, in file order.

  A row of a configuration repeated over seeds gets `val_accuracy` (its mean
  over the seeds) and `diverged` (any seed diverged), so that every plot
  shows the mean.
  """
  if not path.is_file():
    raise UserError(f'no {path.name} in {path.parent}: run --mode=sweep there first')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    for key, value in row.items():
      if key in ('diverged', 'picked'):
        row[key] = value == 'True'
      elif key in (*plots.INT_COLUMNS, 'num_seeds', 'num_diverged'):
        row[key] = int(value)
      else:
        row[key] = float(value)
    if 'val_accuracy_mean' in row:
      row['val_accuracy'] = row['val_accuracy_mean']
      row['diverged'] = row['num_diverged'] > 0
  return rows


def _varying_fields(rows: list[dict]) -> list[str]:
  """The hyperparameter columns of `rows` that take more than one value."""
  metrics = (*plots.METRIC_COLUMNS, *results_lib.SEED_COLUMNS)
  fields = [
    f
    for f in (rows[0] if rows else ())
    if f not in metrics and not f.endswith('_longest')  # PBT's, beside its final
  ]
  return [f for f in fields if len({r[f] for r in rows}) > 1]


def _cell_value(rows: list[dict]) -> float:
  """Best val accuracy of a cell's models; nan if empty, -inf if all diverged."""
  finite = [r['val_accuracy'] for r in rows if not r['diverged']]
  if not rows:
    return math.nan
  return max(finite) if finite else -math.inf


def heatmap(rows: list[dict], title: str, path: Path) -> Path:
  """Val accuracy over learning rate (x) x lambda (y), values in the cells."""
  lrs = sorted({r['learning_rate'] for r in rows})
  lambdas = sorted({r['l2_reg'] for r in rows})
  values = np.array(
    [
      [
        _cell_value(
          [r for r in rows if r['learning_rate'] == lr and r['l2_reg'] == lam]
        )
        for lr in lrs
      ]
      for lam in lambdas
    ]
  )
  fig = plots.new_figure(
    max(1.2 * len(lrs) + 2.8, 5.5), max(0.8 * len(lambdas) + 2.0, 3.6), layout=None
  )
  ax = fig.subplots()
  plots.margins(fig, left=0.8, right=0.3, bottom=0.9 if len(lrs) > 6 else 0.6)
  shown = np.ma.masked_invalid(values)
  cmap = matplotlib.colormaps['viridis'].with_extremes(bad='lightgray')
  image = ax.imshow(shown, cmap=cmap, aspect='auto')
  fig.colorbar(image, ax=ax, label='validation accuracy')
  low, high = image.get_clim()
  for (i, j), value in np.ndenumerate(values):
    if value == -math.inf:
      ax.text(j, i, 'diverged', ha='center', va='center', color='firebrick', fontsize=9)
    elif not math.isnan(value):
      light = (value - low) / (high - low) > 0.6 if high > low else True
      color = 'black' if light else 'white'
      ax.text(j, i, f'{value:.3f}', ha='center', va='center', color=color, fontsize=9)
  ax.set_xticks(range(len(lrs)), [plots.format_value(v) for v in lrs])
  ax.set_yticks(range(len(lambdas)), [plots.format_value(v) for v in lambdas])
  if len(lrs) > 6:
    ax.tick_params(axis='x', labelrotation=45)
  ax.set(
    title=title,
    xlabel=plots.AXIS_NAMES['learning_rate'],
    ylabel=plots.AXIS_NAMES['l2_reg'],
  )
  return plots.save_figure(fig, path)


def line_plot(rows: list[dict], field: str, title: str, path: Path) -> Path:
  """Val accuracy against the one of learning rate / lambda that varies (log x)."""
  xs = sorted({r[field] for r in rows})
  values = [_cell_value([r for r in rows if r[field] == x]) for x in xs]
  fig = plots.new_figure(6.5, 4, layout=None)
  ax = fig.subplots()
  plots.margins(fig, left=0.8)
  finite = [(x, v) for x, v in zip(xs, values, strict=True) if math.isfinite(v)]
  ax.plot([x for x, _ in finite], [v for _, v in finite], marker='o')
  for x, v in finite:
    ax.annotate(
      f'{v:.3f}', (x, v), textcoords='offset points', xytext=(0, 6), ha='center'
    )
  diverged = [x for x, v in zip(xs, values, strict=True) if v == -math.inf]
  if diverged:
    ax.plot(diverged, [0] * len(diverged), 'x', color='firebrick', label='diverged')
    ax.legend(loc='best')
  ax.set_xscale('log')
  ax.set_xticks(xs, [plots.format_value(x) for x in xs])
  ax.minorticks_off()
  ax.margins(x=0.1, y=0.15)
  ax.set(title=title, xlabel=plots.AXIS_NAMES[field], ylabel='validation accuracy')
  ax.grid(alpha=0.3)
  return plots.save_figure(fig, path)


def scatter_plot(rows: list[dict], title: str, path: Path) -> Path:
  """A random search's points: learning rate x lambda, coloured by val accuracy."""
  fig = plots.new_figure(6.5, 4.8, layout=None)
  ax = fig.subplots()
  plots.margins(fig, left=0.8, right=0.3)
  ok = [r for r in rows if not r['diverged']]
  bad = [r for r in rows if r['diverged']]
  image = ax.scatter(
    [r['learning_rate'] for r in ok],
    [r['l2_reg'] for r in ok],
    c=[r['val_accuracy'] for r in ok],
    cmap='viridis',
    s=60,
  )
  fig.colorbar(image, ax=ax, label='validation accuracy')
  if bad:
    ax.scatter(
      [r['learning_rate'] for r in bad],
      [r['l2_reg'] for r in bad],
      marker='x',
      color='firebrick',
      label='diverged',
    )
    ax.legend(loc='best')
  ax.set(xscale='log', yscale='log', title=title)
  ax.set(xlabel=plots.AXIS_NAMES['learning_rate'], ylabel=plots.AXIS_NAMES['l2_reg'])
  return plots.save_figure(fig, path)


def _model_labels(records: list[dict], rows: list[dict]) -> list[str]:
  """Each record's hyperparameters that vary in the sweep: 'H=300, lr=0.1, λ=1e-4'."""
  varying = _varying_fields(rows)
  labels = []
  for record in records:
    values = record['hyperparameters']
    label = ', '.join(
      f'{plots.SHORT_NAMES.get(f, f)}={plots.format_value(values[f])}'
      for f in varying
      if f in values
    )
    labels.append(label or f'model {record["model"]}')
  return labels


def best_curves(records: list[dict], rows: list[dict], path: Path) -> Path:
  """Training loss and val accuracy of the best models (by final val accuracy)."""

  def rank(record):
    curves = record['curves']
    finite = math.isfinite(curves['train_loss'][-1])
    return (not finite, -curves['val_accuracy'][-1], record['model'])

  best = sorted(records, key=rank)[:NUM_BEST_CURVES]
  fig = plots.new_figure(12, 4.8, layout=None)
  loss_ax, acc_ax = fig.subplots(1, 2)
  legend_rows = math.ceil(len(best) / 3)
  plots.margins(fig, left=0.75, top=0.6, bottom=0.55 + 0.22 * legend_rows, wspace=0.9)
  for record, label in zip(best, _model_labels(best, rows), strict=True):
    curves = record['curves']
    marker = plots.point_marker(len(curves['step']))
    loss_ax.plot(curves['step'], curves['train_loss'], marker=marker, label=label)
    acc_ax.plot(curves['step'], curves['val_accuracy'], marker=marker)
  loss_ax.set(title='Training loss', xlabel='iteration', ylabel='mean loss')
  acc_ax.set(title='Validation accuracy', xlabel='iteration', ylabel='accuracy')
  for ax in (loss_ax, acc_ax):
    ax.grid(alpha=0.3)
  fig.suptitle(f'Best {len(best)} of {len(records)} models')
  fig.legend(loc='lower center', ncols=min(len(best), 3), fontsize=9)
  return plots.save_figure(fig, path)


def write_sweep_plots(workdir: str | Path) -> list[Path]:
  """Writes the plots of a `--mode=sweep` workdir.

  Args:
    workdir: a directory holding `config.json`, `results.csv` and `curves.jsonl`.

  Returns:
    The paths written: `plots/heatmap_h{H}.png` for each hidden size whose
    models vary the learning rate or lambda (a heatmap over both, a line plot
    over the one that varies, a scatter plot for a random search), then
    `plots/best_curves.png`.
  """
  workdir = Path(workdir)
  plots_dir = plots.plots_directory(workdir)
  rows = read_results(workdir / 'results.csv')
  records = plots.read_jsonl(workdir / 'curves.jsonl')
  config = workdir_lib.read_json(workdir / 'config.json')
  other_fields = [
    f
    for f in _varying_fields(rows)
    if f not in ('hidden_size', 'learning_rate', 'l2_reg')
  ]
  notes = [f'best over {", ".join(other_fields)}'] if other_fields else []
  if rows and len({r.get('steps') for r in rows}) > 1:  # one colour scale, one budget
    most = max(r['steps'] for r in rows)
    rows = [r for r in rows if r['steps'] == most]
    notes.append(f'the {len(rows)} models trained {most} steps')
  if rows and 'num_seeds' in rows[0]:
    notes.insert(0, f'mean over {max(r["num_seeds"] for r in rows)} seeds')
  note = f' ({"; ".join(notes)})' if notes else ''
  written = []
  for hidden_size in sorted({r['hidden_size'] for r in rows}):
    group = [r for r in rows if r['hidden_size'] == hidden_size]
    path = plots_dir / f'heatmap_h{hidden_size}.png'
    title = f'Validation accuracy, H={hidden_size}{note}'
    varying = [f for f in ('learning_rate', 'l2_reg') if len({r[f] for r in group}) > 1]
    if config.get('search') in ('random', 'pbt') or config.get('num_samples', 0) > 0:
      written.append(scatter_plot(group, title, path))
    elif len(varying) == 2:
      written.append(heatmap(group, title, path))
    elif varying:
      written.append(line_plot(group, varying[0], title, path))
    else:
      logging.info(
        'No heatmap for H=%d: learning rate and lambda take one value each.',
        hidden_size,
      )
  if records and rows:
    written.append(best_curves(records, rows, plots_dir / 'best_curves.png'))
  return written
