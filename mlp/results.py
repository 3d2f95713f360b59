"""A sweep's results tables: `results.csv`, `results.md` and `curves.jsonl`.

One row per model, best first. When the sweep repeats each configuration over
several seeds, `results.csv` and `results.md` have one row per configuration
instead (the mean, sample standard deviation, min and max of its validation
accuracy over the seeds, their number, and how many diverged), ranked by the
mean; the rows of the single models go to `results_per_seed.csv` and
`results_per_seed.md`.

`curves.jsonl` holds one JSON object per model, in grid order: `model` (its
index), `hyperparameters` (the table's fields) and `curves` (each metric of
`metrics.jsonl` as a list over evaluations). An adaptive search adds its
own columns after the metrics (`rung`, `steps`: where each model stopped).

A table is a header (a tuple of column names) and rows (dicts by column), so
another kind of sweep can add its columns in one place.
"""

import csv
import dataclasses
import io
import math
from collections.abc import Sequence

import numpy as np

from mlp import workdir as workdir_lib

# Always shown, as in the course's table; other swept fields follow.
BASE_COLUMNS = ('hidden_size', 'learning_rate', 'l2_reg', 'num_iters')
METRIC_COLUMNS = ('val_accuracy', 'train_accuracy', 'final_loss', 'diverged')
SEED_COLUMNS = (
  'num_seeds',
  'val_accuracy_mean',
  'val_accuracy_std',
  'val_accuracy_min',
  'val_accuracy_max',
  'train_accuracy_mean',
  'num_diverged',
)
PER_SEED = 'results_per_seed'


@dataclasses.dataclass(frozen=True)
class Pick:
  """The search's pick (a model's index, `None` if every model diverged) and
  the rule it was picked by."""

  index: int | None = None
  rule: str = 'the best val accuracy'

  def caption(self) -> str:
    """The line above the results table that says which row is the pick."""
    if self.index is None:
      return 'No pick: every model diverged.'
    return f'Picked (`picked` = yes): model {self.index}, by {self.rule}.'


def columns(swept: dict) -> list[str]:
  """Hyperparameter columns: the course's four, the other swept fields, seed."""
  extra = [f for f in swept if f not in BASE_COLUMNS and f != 'seed']
  return [*BASE_COLUMNS, *extra, 'seed']


def format_value(value) -> str:
  """The one number format of the tables and reports: 4 significant digits
  (`0.9792`, `0.0001`, `2.302`), thousands separated from 10,000 on."""
  if isinstance(value, bool):
    return 'yes' if value else 'no'
  if isinstance(value, float) and math.isfinite(value):
    return f'{value:,.0f}' if abs(value) >= 1e4 else f'{value:.4g}'
  if isinstance(value, int):
    return f'{value:,}' if abs(value) >= 10000 else str(value)
  return str(value)


def rows(results: list, fields: Sequence[str], pick: Pick = Pick()) -> list[dict]:
  """One dict per model: its hyperparameters, then its metrics, where it
  stopped, and whether it is the pick."""
  return [
    {
      **{f: r.config[f] for f in fields},
      'val_accuracy': r.val_accuracy,
      'train_accuracy': r.train_accuracy,
      'final_loss': r.final_loss,
      'diverged': r.diverged,
      **r.search,
      'picked': r.index == pick.index,
    }
    for r in results
  ]


def _search_columns(results: list) -> list[str]:
  return list(results[0].search) if results else []


def has_repeats(results: list, fields: Sequence[str]) -> bool:
  """Whether the sweep trains each configuration with more than one seed."""
  return 'seed' in fields and len({r.config['seed'] for r in results}) > 1


def configurations(results: list, fields: Sequence[str]) -> list[list]:
  """The results grouped by configuration (every field but the seed), each
  group in grid order, the groups ranked: none diverged first, then by mean
  validation accuracy, then by place in the grid."""
  keys = [f for f in fields if f != 'seed']
  groups: dict[tuple, list] = {}
  for r in sorted(results, key=lambda r: r.index):
    groups.setdefault(tuple(r.config[f] for f in keys), []).append(r)

  def rank(group):
    diverged = any(r.diverged for r in group)
    return (diverged, -float(np.mean([r.val_accuracy for r in group])), group[0].index)

  return sorted(groups.values(), key=rank)


def aggregate_rows(
  results: list, fields: Sequence[str], pick: Pick = Pick()
) -> list[dict]:
  """One dict per configuration: its fields (no seed), then `SEED_COLUMNS`,
  and whether the pick is one of its seeds."""
  keys = [f for f in fields if f != 'seed']
  table = []
  for group in configurations(results, fields):
    val = np.array([r.val_accuracy for r in group], np.float64)
    table.append(
      {
        **{f: group[0].config[f] for f in keys},
        'num_seeds': len(group),
        'val_accuracy_mean': float(val.mean()),
        'val_accuracy_std': float(val.std(ddof=1)) if len(group) > 1 else 0.0,
        'val_accuracy_min': float(val.min()),
        'val_accuracy_max': float(val.max()),
        'train_accuracy_mean': float(np.mean([r.train_accuracy for r in group])),
        'num_diverged': sum(r.diverged for r in group),
        'picked': any(r.index == pick.index for r in group),
      }
    )
  return table


def best_model(results: list, fields: Sequence[str]):
  """The model the sweep picks: the best of the best configuration's seeds
  (by mean validation accuracy), or with one seed the best model; `None` if
  every configuration has a diverged model."""
  for group in configurations(results, fields):
    if any(r.diverged for r in group):
      return None
    return min(group, key=lambda r: (-r.val_accuracy, r.index))
  return None


def tables(
  results: list, fields: Sequence[str], pick: Pick = Pick()
) -> dict[str, tuple[tuple, list]]:
  """`{file stem: (header, rows)}` of the tables the sweep writes; `results`
  already sorted, best first."""
  per_model = (
    (*fields, *METRIC_COLUMNS, *_search_columns(results), 'picked'),
    rows(results, fields, pick),
  )
  if not has_repeats(results, fields):
    return {'results': per_model}
  header = (*(f for f in fields if f != 'seed'), *SEED_COLUMNS, 'picked')
  return {
    'results': (header, aggregate_rows(results, fields, pick)),
    PER_SEED: per_model,
  }


def markdown_table(header: Sequence[str], table: list[dict]) -> str:
  """A Markdown table of `table`'s rows under `header`."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in table:
    lines.append('| ' + ' | '.join(format_value(row[h]) for h in header) + ' |')
  return '\n'.join(lines)


def write(workdir, results: list, fields: Sequence[str], pick: Pick = Pick()) -> None:
  """Writes the tables (`tables`) as `.csv` and `.md` (under the pick's
  caption), and `curves.jsonl`, each atomically; `results` sorted, best
  first."""
  for stem, (header, table) in tables(results, fields, pick).items():
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator='\n')
    writer.writeheader()
    writer.writerows(table)
    with workdir_lib.atomic_open(workdir / f'{stem}.csv') as f:
      f.write(buffer.getvalue())
    with workdir_lib.atomic_open(workdir / f'{stem}.md') as f:
      f.write(f'{pick.caption()}\n\n{markdown_table(header, table)}\n')
  with workdir_lib.atomic_open(workdir / 'curves.jsonl') as f:
    for r in sorted(results, key=lambda r: r.index):
      record = {
        'model': r.index,
        'hyperparameters': {k: r.config[k] for k in fields},
        'curves': r.history,
      }
      f.write(workdir_lib.dumps_json(record) + '\n')
