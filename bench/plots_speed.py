"""How long a run's plots and report take to draw, one by one.

  .venv/bin/python bench/plots_speed.py TRAIN_WORKDIR [SWEEP_WORKDIR]

TRAIN_WORKDIR is a finished `--mode=train` workdir of MNIST (e.g. `make run`'s
runs/default), SWEEP_WORKDIR a finished `--mode=sweep` one. Prints the import
of the plotting modules (in a fresh interpreter, as a run pays it), then each
figure's time to draw and write (best of `--repeats`, after one untimed
drawing, so fonts are loaded as in a run, which draws four), and `report.md`'s.
Results: docs/performance.md, "The whole process".
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from configs import default  # noqa: E402
from mlp import data, evaluation, plots, report, sweep_plots  # noqa: E402
from mlp import workdir as workdir_lib  # noqa: E402

_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed drawings of each figure.')
IMPORT = (
  'import time; t = time.perf_counter(); from mlp import plots, sweep_plots; '
  'print(time.perf_counter() - t)'
)


def best_time(fn) -> float:
  fn()
  times = []
  for _ in range(_REPEATS.value):
    started = time.perf_counter()
    fn()
    times.append(time.perf_counter() - started)
  return min(times)


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    sys.exit('Error: give a train workdir (and a sweep workdir)')
  train_dir = Path(argv[1])
  imported = subprocess.run(
    [sys.executable, '-c', IMPORT], cwd=REPO, capture_output=True, text=True
  )
  print(f'import mlp.plots, mlp.sweep_plots (matplotlib): {imported.stdout.strip()} s')
  dataset = data.from_config(default.get_config())
  metrics = plots.read_jsonl(train_dir / 'metrics.jsonl')
  params = workdir_lib.load_params(train_dir / 'params.npz')
  split = {'test': (dataset.test_images, dataset.test_labels)}
  predictions = evaluation.evaluate(params, split).predictions('test')
  labels, shape = dataset.test_labels, dataset.image_shape
  out = Path(tempfile.mkdtemp(prefix='plots_speed_'))
  figures = {
    'learning_curves.png': lambda: plots.learning_curves(metrics, out / 'a.png'),
    'weights.png': lambda: plots.weights_plot(params, shape, out / 'b.png'),
    'confusion.png': lambda: plots.confusion_plot(
      plots.confusion_matrix(labels, predictions, 10), out / 'c.png'
    ),
    'misclassified.png': lambda: plots.misclassified_plot(
      dataset.test_images, labels, predictions, shape, out / 'd.png'
    ),
    'report.md (train)': lambda: report.write_train_report(train_dir),
  }
  if len(argv) > 2:
    sweep_dir = Path(argv[2])
    figures['sweep plots (all)'] = lambda: sweep_plots.write_sweep_plots(sweep_dir)
    figures['report.md (sweep)'] = lambda: report.write_sweep_report(sweep_dir)
  total = 0.0
  print('| what | s |')
  print('|---|---|')
  for name, fn in figures.items():
    seconds = best_time(fn)
    total += seconds
    print(f'| {name} | {seconds:.3f} |')
  print(f'| all of them | {total:.3f} |')


if __name__ == '__main__':
  app.run(main)
