"""`WORKDIR/report.md`: a workdir's summary, results and plots on one page.

The report is put together from the files already in the workdir
(`summary.json`, `config.json`, `results.md`, `plots/*.png`), so it can be
written again at any time, and the workdir can be read on its own. Plots are
linked relatively (`plots/NAME.png`); only the plots that exist are linked.
"""

import importlib
import json
import threading
from pathlib import Path

from mlp import hparams
from mlp import workdir as workdir_lib
from mlp.errors import UserError
from mlp.progress import plural
from mlp.results import format_value

NUM_TOP_ROWS = 10
_TRAIN_PLOTS = (
  ('learning_curves.png', 'Learning curves'),
  ('weights.png', 'First-layer weights'),
  ('confusion.png', 'Test confusion matrix'),
  ('misclassified.png', 'Misclassified test images'),
)
_TRAIN_SUMMARY = (
  ('val_accuracy', 'validation accuracy'),
  ('test_accuracy', 'test accuracy'),
  ('train_accuracy', 'train accuracy ({train_images})'),
  ('final_loss', 'final training loss'),
  ('diverged', 'diverged'),
  ('steps', 'steps'),
  ('num_params', 'parameters'),
  ('train_seconds', 'training seconds{all_processes}'),
  ('process_train_seconds', 'training seconds of the last process'),
  ('compile_seconds', 'compile seconds'),
  ('examples_per_second', 'examples / second'),
  ('backend', 'backend'),
  ('device_kind', 'device'),
  ('jax_version', 'JAX version'),
)
_SWEEP_SUMMARY = (
  ('num_models', 'models'),
  ('num_diverged', 'diverged'),
  ('sweep_seconds', 'sweep seconds'),
  ('compile_seconds', 'compile seconds'),
  ('model_examples_per_second', 'model-examples / second'),
  ('num_devices', 'devices'),
  ('backend', 'backend'),
  ('jax_version', 'JAX version'),
)


def key_value_table(pairs: list[tuple[str, object]], header=('', '')) -> str:
  """A two-column Markdown table of `(name, value)` pairs."""
  lines = [f'| {header[0]} | {header[1]} |', '|---|---|']
  lines += [f'| {name} | {format_value(value)} |' for name, value in pairs]
  return '\n'.join(lines)


def _read(workdir: Path, name: str, hint: str):
  path = workdir / name
  if not path.is_file():
    raise UserError(f'no {name} in {workdir}: {hint}')
  return workdir_lib.read_json(path)


def _plot_section(workdir: Path, plots: list[tuple[str, str]]) -> list[str]:
  lines = ['## Plots', '']
  found = [
    (name, title) for name, title in plots if (workdir / 'plots' / name).is_file()
  ]
  if not found:
    return [*lines, 'No plots in `plots/`.', '']
  for name, title in found:
    lines += [f'### {title}', '', f'![{title}](plots/{name})', '']
  return lines


def _config_section(config: dict) -> list[str]:
  return [
    '## Full config',
    '',
    '<details><summary>config.json</summary>',
    '',
    '```json',
    json.dumps(config, indent=2),
    '```',
    '',
    '</details>',
    '',
  ]


def _write(workdir: Path, lines: list[str]) -> Path:
  path = workdir / 'report.md'
  with workdir_lib.atomic_open(path) as f:
    f.write('\n'.join(lines).rstrip() + '\n')
  return path


def write_train_report(workdir: str | Path) -> Path:
  """Writes `report.md` for a `--mode=train` workdir.

  Args:
    workdir: a directory holding `summary.json` and `config.json`, and, if
      `plots.write_train_plots` ran, `plots/*.png`.

  Returns:
    The path of `report.md`.
  """
  workdir = Path(workdir)
  hint = f'train first with --mode=train --workdir={workdir}'
  summary = _read(workdir, 'summary.json', hint)
  config = _read(workdir, 'config.json', hint)
  num_train = summary.get('num_train')
  train_images = f'all {format_value(num_train)} images' if num_train else 'all images'
  resumed = 'process_train_seconds' in summary
  all_processes = ' (all processes of the run)' if resumed else ''
  lines = [
    f'# Training run `{workdir.name}`',
    '',
    '## Summary',
    '',
    key_value_table(
      [
        (
          name.format(train_images=train_images, all_processes=all_processes),
          summary[key],
        )
        for key, name in _TRAIN_SUMMARY
        if key in summary
      ],
      ('metric', 'value'),
    ),
    '',
    '## Options in effect',
    '',
    _OPTIONS_NOTE,
    '',
    key_value_table(options_in_effect(config), ('field', 'value')),
    '',
    *_plot_section(workdir, list(_TRAIN_PLOTS)),
    *_config_section(config),
  ]
  return _write(workdir, lines)


_OPTIONS_NOTE = (
  'The fields this run reads: the ones a choice leaves unused and the options '
  'that are off are left out; `config.json` below has every field.'
)


_SWEEP_OPTIONS_NOTE = (
  'The fields every model reads, besides the swept ones (in the tables below); '
  '`config.json` below has every field.'
)


def options_in_effect(config: dict, leave_out=()) -> list[tuple[str, object]]:
  """`(field, value)` of the options in effect (`hparams.in_effect`), and the data."""
  pairs = [
    (key, config[key])
    for key in hparams.in_effect([config])
    if key not in leave_out and key in config
  ]
  return [*pairs, ('dataset', config.get('dataset', 'mnist'))]


def _top_heading(header: str, num_rows: int, train_eval_size: int | None) -> list[str]:
  """The heading of the report's top rows of `results.md` (whose first line
  is `header`): models, or configurations when seeds are repeats."""
  shown = min(num_rows, NUM_TOP_ROWS)
  train = (
    f' `train_accuracy` is on the first {format_value(train_eval_size)} training '
    'images (`train_eval_size`).'
    if train_eval_size
    else ''
  )
  if 'val_accuracy_mean' in header:
    return [
      f'## Top {shown} of {plural(num_rows, "configuration")}',
      '',
      'By mean validation accuracy over the seeds; all rows are in `results.md` '
      f'and `results.csv`, each model in `results_per_seed.md`.{train}',
    ]
  return [
    f'## Top {shown} of {plural(num_rows, "model")}',
    '',
    f'By validation accuracy; all rows are in `results.md` and `results.csv`.{train}',
  ]


def _sweep_plots(workdir: Path) -> list[tuple[str, str]]:
  def hidden_size(path: Path) -> int:
    digits = path.stem.removeprefix('heatmap_h')
    return int(digits) if digits.isdigit() else 0

  heatmaps = sorted((workdir / 'plots').glob('heatmap_h*.png'), key=hidden_size)
  return [
    *[(p.name, f'Validation accuracy, H={hidden_size(p)}') for p in heatmaps],
    ('best_curves.png', 'Learning curves of the best models'),
    ('search.png', 'The search: where each model stopped, or what it explored'),
  ]


def write_sweep_report(workdir: str | Path) -> Path:
  """Writes `report.md` for a `--mode=sweep` workdir.

  Args:
    workdir: a directory holding `summary.json`, `config.json` and
      `results.md`, and, if `sweep_plots.write_sweep_plots` ran, `plots/*.png`.

  Returns:
    The path of `report.md`.
  """
  workdir = Path(workdir)
  hint = f'run the sweep first with --mode=sweep --workdir={workdir}'
  summary = _read(workdir, 'summary.json', hint)
  config = _read(workdir, 'config.json', hint)
  results_path = workdir / 'results.md'
  if not results_path.is_file():
    raise UserError(f'no results.md in {workdir}: {hint}')
  text = results_path.read_text().strip().splitlines()
  caption = [x for x in text if x and not x.startswith('|')]
  table = [x for x in text if x.startswith('|')]
  num_rows = len(table) - 2
  best = summary.get('best')
  swept = {field: values for field, values in config.get('sweep', {}).items() if values}
  lines = [
    f'# Sweep `{workdir.name}`',
    '',
    '## Summary',
    '',
    key_value_table(
      [(name, summary[key]) for key, name in _SWEEP_SUMMARY if key in summary]
      + [
        (f'swept: {field}', ', '.join(map(format_value, v)))
        for field, v in swept.items()
      ],
      ('item', 'value'),
    ),
    '',
    '## Options in effect',
    '',
    _SWEEP_OPTIONS_NOTE,
    '',
    key_value_table(options_in_effect(config, leave_out=swept), ('field', 'value')),
    '',
    '## Best model',
    '',
    key_value_table(list(best.items()), ('field', 'value'))
    if best
    else 'Every model diverged: lower the learning rates of the sweep.',
    '',
    *_top_heading(table[0], num_rows, config.get('train_eval_size')),
    '',
    *caption[:1],
    '',
    *table[: NUM_TOP_ROWS + 2],
    '',
    *_plot_section(workdir, _sweep_plots(workdir)),
    *_config_section(config),
  ]
  return _write(workdir, lines)


def prefetch(module: str) -> threading.Thread:
  """Imports `module` (the plots: matplotlib) in a background thread.

  A run calls it early, so that the import overlaps its data loading and
  compiling instead of following its training; the run's own import of the
  module later waits for this one if it is not done.
  """
  thread = threading.Thread(
    target=importlib.import_module, args=(module,), name=f'import {module}', daemon=True
  )
  thread.start()
  return thread
