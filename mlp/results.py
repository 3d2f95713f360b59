"""A sweep's results table: `results.csv`, `results.md` and `curves.jsonl`.

`curves.jsonl` holds one JSON object per model, in grid order: `model` (its
index), `hyperparameters` (the table's fields) and `curves` (each metric of
`metrics.jsonl` as a list over evaluations). An adaptive search adds its
own columns after the metrics (`rung`, `steps`: where each model stopped).
"""

import csv
import io
import json

from mlp import workdir as workdir_lib

# Always shown, as in the course's table; other swept fields follow.
BASE_COLUMNS = ('hidden_size', 'learning_rate', 'l2_reg', 'num_iters')
METRIC_COLUMNS = ('val_accuracy', 'train_accuracy', 'final_loss', 'diverged')


def columns(swept: dict) -> list[str]:
  """Hyperparameter columns: the course's four, the other swept fields, seed."""
  extra = [f for f in swept if f not in BASE_COLUMNS and f != 'seed']
  return [*BASE_COLUMNS, *extra, 'seed']


def rows(results: list, fields: list[str]) -> list[dict]:
  """One dict per model: its hyperparameters, then its metrics."""
  return [
    {
      **{f: r.config[f] for f in fields},
      'val_accuracy': r.val_accuracy,
      'train_accuracy': r.train_accuracy,
      'final_loss': r.final_loss,
      'diverged': r.diverged,
      **r.search,
    }
    for r in results
  ]


def _search_columns(results: list) -> list[str]:
  return list(results[0].search) if results else []


def _format(value) -> str:
  if isinstance(value, bool):
    return 'yes' if value else 'no'
  if isinstance(value, float):
    return f'{value:.4f}' if 1e-3 <= abs(value) < 1e4 or value == 0 else f'{value:.3g}'
  return str(value)


def markdown_table(results: list, fields: list[str]) -> str:
  """A Markdown table of `results` (already sorted)."""
  header = [*fields, *METRIC_COLUMNS, *_search_columns(results)]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in rows(results, fields):
    lines.append('| ' + ' | '.join(_format(row[h]) for h in header) + ' |')
  return '\n'.join(lines)


def write(workdir, results: list, fields: list[str]) -> None:
  """Writes `results.csv`, `results.md` and `curves.jsonl`, each atomically."""
  table = rows(results, fields)
  buffer = io.StringIO()
  writer = csv.DictWriter(
    buffer,
    fieldnames=[*fields, *METRIC_COLUMNS, *_search_columns(results)],
    lineterminator='\n',
  )
  writer.writeheader()
  writer.writerows(table)
  with workdir_lib.atomic_open(workdir / 'results.csv') as f:
    f.write(buffer.getvalue())
  with workdir_lib.atomic_open(workdir / 'results.md') as f:
    f.write(markdown_table(results, fields) + '\n')
  with workdir_lib.atomic_open(workdir / 'curves.jsonl') as f:
    for r in sorted(results, key=lambda r: r.index):
      record = {
        'model': r.index,
        'hyperparameters': {k: r.config[k] for k in fields},
        'curves': r.history,
      }
      f.write(json.dumps(record) + '\n')
