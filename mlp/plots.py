"""PNG plots of a workdir, written under `WORKDIR/plots/` from the workdir's files.

A train workdir gets `learning_curves.png`, `weights.png` (the first layer's
weights as 28x28 tiles), `confusion.png` and `misclassified.png` (both on the
test split); a sweep workdir gets `heatmap_h{H}.png` (validation accuracy over
learning rate x lambda, one per hidden size) and `best_curves.png`.

Figures are `matplotlib.figure.Figure` objects rendered by Agg, never pyplot,
so nothing here touches a global backend or leaves figures open.
"""

import functools
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.figure
import numpy as np

from mlp import data, evaluation, progress
from mlp import workdir as workdir_lib
from mlp.errors import UserError

MAX_WEIGHT_TILES = 100
NUM_MISCLASSIFIED = 25
SHORT_NAMES = {
  'hidden_size': 'H',
  'learning_rate': 'lr',
  'l2_reg': 'λ',
  'num_iters': 'iters',
  'lr_decay': 'decay',
  'init_std': 'init',
  'batch_size': 'batch',
}
AXIS_NAMES = {'learning_rate': 'learning rate', 'l2_reg': 'λ (L2 regularization)'}
INT_COLUMNS = (
  'hidden_size',
  'num_iters',
  'seed',
  'batch_size',
  'bracket',
  'rung',
  'steps',
  'copies',
)
# Not hyperparameters: outcomes, and where an adaptive search left a model.
METRIC_COLUMNS = (
  'val_accuracy',
  'train_accuracy',
  'final_loss',
  'diverged',
  'bracket',
  'rung',
  'steps',
  'copies',
  'picked',
)


def new_figure(
  width: float, height: float, layout: str | None = 'constrained'
) -> matplotlib.figure.Figure:
  """A figure of `width` x `height` inches.

  The plots of every run pass `layout=None` and set their margins themselves
  (`margins`): a layout engine measures every text of the figure again, which
  costs more than drawing it.
  """
  return matplotlib.figure.Figure(figsize=(width, height), layout=layout)


def margins(fig: matplotlib.figure.Figure, **inches: float) -> None:
  """Sets the space around the axes in inches (`left`, `right`, `top`, `bottom`,
  and `wspace`, `hspace` in inches between axes)."""
  width, height = fig.get_size_inches()
  left, right = inches.get('left', 0.7), inches.get('right', 0.2)
  top, bottom = inches.get('top', 0.45), inches.get('bottom', 0.55)
  columns = max(len(fig.axes), 1) if 'wspace' in inches else 1
  axes_width = (
    width - left - right - inches.get('wspace', 0) * (columns - 1)
  ) / columns
  fig.subplots_adjust(
    left=left / width,
    right=1 - right / width,
    top=1 - top / height,
    bottom=bottom / height,
    wspace=inches.get('wspace', 0) / max(axes_width, 1e-3),
  )


def save_figure(fig: matplotlib.figure.Figure, path: Path) -> Path:
  with workdir_lib.atomic_open(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=100)
  return path


def plots_directory(workdir: Path) -> Path:
  path = workdir_lib.existing(workdir, 'pass the --workdir of a run') / 'plots'
  path.mkdir(exist_ok=True)
  return path


def read_jsonl(path: Path) -> list[dict]:
  if not path.is_file():
    raise UserError(f'no {path.name} in {path.parent}: run training there first')
  return [
    workdir_lib.loads_json(line)
    for line in path.read_text().splitlines()
    if line.strip()
  ]


def format_value(value: float) -> str:
  """A compact hyperparameter value: `0.001` -> `'1e-3'`, `0.5` -> `'0.5'`, `300` -> `'300'`."""
  if isinstance(value, int | np.integer) or float(value).is_integer():
    return str(int(value))
  if 1e-2 <= abs(value) < 1e3:
    return f'{value:.3g}'
  mantissa, exponent = f'{value:.2e}'.split('e')
  mantissa = mantissa.rstrip('0').rstrip('.')
  return f'{mantissa}e{int(exponent)}'


def point_marker(num_points: int) -> str | None:
  return 'o' if num_points <= 30 else None


def learning_curves(
  metrics: list[dict], path: Path, train_label: str = 'train'
) -> Path:
  """Loss, train/val accuracy and learning rate against the iteration.

  Args:
    metrics: the evaluations of `metrics.jsonl`.
    path: the PNG to write.
    train_label: the train accuracy's legend, e.g. 'train (5k subset)'.
  """
  return save_figure(learning_curves_figure(metrics, train_label), path)


def learning_curves_figure(
  metrics: list[dict], train_label: str = 'train'
) -> matplotlib.figure.Figure:
  step = [m['step'] for m in metrics]
  marker = point_marker(len(step))
  fig = new_figure(14, 4.2, layout=None)
  loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
  margins(fig, left=0.75, right=0.2, wspace=0.9)
  loss_ax.plot(step, [m['train_loss'] for m in metrics], marker=marker)
  loss_ax.set(title='Training loss', xlabel='iteration', ylabel='mean loss')
  acc_ax.plot(
    step, [m['train_accuracy'] for m in metrics], marker=marker, label=train_label
  )
  acc_ax.plot(step, [m['val_accuracy'] for m in metrics], marker=marker, label='val')
  acc_ax.set(title='Accuracy', xlabel='iteration', ylabel='accuracy')
  acc_ax.legend(loc='lower right')
  lr_ax.plot(step, [m['learning_rate'] for m in metrics], marker=marker, color='C2')
  lr_ax.set(title='Learning rate', xlabel='iteration', ylabel='learning rate')
  for ax in (loss_ax, acc_ax, lr_ax):
    ax.grid(alpha=0.3)
  return fig


def tile_grid(tiles: np.ndarray, grid_cols: int, fill: float) -> np.ndarray:
  """`(count, rows, cols)` tiles as one `(grid_rows * (rows + 1) + 1,
  grid_cols * (cols + 1) + 1)` image, row by row, with lines of `fill` around
  every tile (and in the empty places of the last row)."""
  count, rows, cols = tiles.shape
  grid_rows = max(math.ceil(count / grid_cols), 1)
  padded = np.full((grid_rows * grid_cols, rows + 1, cols + 1), fill, np.float64)
  padded[:count, 1:, 1:] = tiles
  image = padded.reshape(grid_rows, grid_cols, rows + 1, cols + 1)
  image = image.transpose(0, 2, 1, 3).reshape(grid_rows * (rows + 1), -1)
  return np.pad(image, ((0, 1), (0, 1)), constant_values=fill)


def weight_mosaic(
  weights: np.ndarray, image_shape: tuple[int, int], max_tiles: int = MAX_WEIGHT_TILES
) -> np.ndarray:
  """The first `max_tiles` columns of `W1` as a grid of image tiles.

  Args:
    weights: `W1`, `(rows * cols, H)`.
    image_shape: `(rows, cols)` of one input image.
    max_tiles: at most this many hidden units are shown.

  Returns:
    `(grid_rows * (rows + 1) + 1, grid_cols * (cols + 1) + 1)` floats in [0, 1]:
    each tile scaled to its own min..max, separated by lines of 1.
  """
  rows, cols = image_shape
  count = min(weights.shape[1], max_tiles)
  tiles = np.asarray(weights[:, :count], np.float64).T.reshape(count, rows, cols)
  low = tiles.min(axis=(1, 2), keepdims=True)
  span = tiles.max(axis=(1, 2), keepdims=True) - low
  flat = span == 0
  tiles = np.where(flat, 0.5, (tiles - low) / np.where(flat, 1, span))
  return tile_grid(tiles, math.ceil(math.sqrt(count)), fill=1.0)


def weights_plot(params: dict, image_shape: tuple[int, int], path: Path) -> Path:
  """`W1`'s columns as image tiles, as in the cs231n course."""
  return save_figure(weights_figure(params, image_shape), path)


def weights_figure(params: dict, image_shape: tuple[int, int]):
  """One image: `weight_mosaic` of `W1`, titled with how many units it shows."""
  hidden_size = params['W1'].shape[1]
  fig = new_figure(7, 7.4, layout=None)
  ax = fig.subplots()
  margins(fig, left=0.1, right=0.1, top=0.6, bottom=0.1)
  mosaic = weight_mosaic(params['W1'], image_shape)
  ax.imshow(mosaic, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
  shown = min(hidden_size, MAX_WEIGHT_TILES)
  ax.set_title(
    f'First-layer weights W1: {shown} of {hidden_size} hidden units\n'
    '(each tile scaled to its own range)'
  )
  ax.set_axis_off()
  return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int):
  """`(C, C)` counts: row = true class, column = predicted class."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predictions), 1)
  return counts


def confusion_plot(counts: np.ndarray, path: Path) -> Path:
  """The test confusion matrix with every count written in its cell."""
  return save_figure(confusion_figure(counts), path)


def confusion_figure(counts: np.ndarray) -> matplotlib.figure.Figure:
  num_classes = counts.shape[0]
  fig = new_figure(7, 6.2, layout=None)
  ax = fig.subplots()
  margins(fig, left=0.7, right=0.2, top=0.45, bottom=0.6)
  image = ax.imshow(counts, cmap='Blues')
  fig.colorbar(image, ax=ax, shrink=0.8, label='test images')
  for (true, predicted), count in np.ndenumerate(counts):
    color = 'white' if count > counts.max() / 2 else 'black'
    ax.text(
      predicted, true, str(count), ha='center', va='center', color=color, fontsize=8
    )
  accuracy = np.trace(counts) / max(counts.sum(), 1)
  ax.set(
    title=f'Test confusion matrix (accuracy {accuracy:.4f})',
    xlabel='predicted class',
    ylabel='true class',
    xticks=range(num_classes),
    yticks=range(num_classes),
  )
  return fig


def misclassified(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
  """Indices of the first `NUM_MISCLASSIFIED` images whose prediction is wrong."""
  return np.flatnonzero(predictions != labels)[:NUM_MISCLASSIFIED]


def misclassified_plot(
  images: np.ndarray,
  labels: np.ndarray,
  predictions: np.ndarray,
  image_shape: tuple[int, int],
  path: Path,
) -> Path:
  """The first misclassified test images, captioned 'true 7 / pred 2'."""
  return save_figure(
    misclassified_figure(images, labels, predictions, image_shape), path
  )


def misclassified_figure(
  images: np.ndarray,
  labels: np.ndarray,
  predictions: np.ndarray,
  image_shape: tuple[int, int],
  grid_cols: int = 5,
) -> matplotlib.figure.Figure:
  """The digits of `misclassified` as one image (`tile_grid`), white digits on
  black as MNIST stores them, each captioned on the white band above it."""
  wrong = misclassified(labels, predictions)
  rows, cols = image_shape
  tiles = np.asarray(images)[wrong].reshape(len(wrong), rows, cols)
  gap = max(rows // 3, 2)  # the caption's band: `gap - 1` blank rows per tile
  blank = np.full((len(wrong), gap - 1, cols), np.nan)
  grid = tile_grid(np.concatenate([blank, tiles], axis=1), grid_cols, np.nan)
  width, top, bottom = 8.0, 0.45, 0.1
  height = (width - 0.2) * grid.shape[0] / grid.shape[1] + top + bottom
  fig = new_figure(width, height, layout=None)
  ax = fig.subplots()
  margins(fig, left=0.1, right=0.1, top=top, bottom=bottom)
  cmap = matplotlib.colormaps['gray'].with_extremes(bad='white')
  ax.imshow(
    np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=255, interpolation='nearest'
  )
  ax.set_axis_off()
  for k, i in enumerate(wrong):
    top_row = (k // grid_cols) * (rows + gap)
    left = (k % grid_cols) * (cols + 1) + 1
    ax.text(
      left + (cols - 1) / 2,
      top_row + gap / 2,
      f'true {labels[i]} / pred {predictions[i]}',
      ha='center',
      va='center',
      fontsize=10,
    )
  total = int(np.sum(predictions != labels))
  fig.suptitle(f'Misclassified test images: first {len(wrong)} of {total}')
  if not len(wrong):
    ax.text(0, 0.5, 'no test image is misclassified', fontsize=12)
  return fig


def write_train_plots(
  workdir: str | Path,
  dataset: data.Dataset,
  test_predictions: Callable[[], np.ndarray] | None = None,
) -> list[Path]:
  """Writes the plots of a `--mode=train` workdir.

  Args:
    workdir: a directory holding `metrics.jsonl` and `params.npz`.
    dataset: the run's dataset; its test split feeds the confusion matrix and
      the misclassified images (uint8 images `(N, 784)`).
    test_predictions: returns the predicted class of every test image; called
      only after the learning curves and the weights are drawn, so the run can
      evaluate meanwhile (default: predicted here, with `evaluation`).

  Returns:
    The paths written: `plots/learning_curves.png`, `plots/weights.png`,
    `plots/confusion.png`, `plots/misclassified.png`.
  """
  workdir = Path(workdir)
  plots_dir = plots_directory(workdir)
  metrics = read_jsonl(workdir / 'metrics.jsonl')
  params = workdir_lib.load_params(workdir / 'params.npz')
  input_size = dataset.test_images.shape[1]
  if params.get('W1', np.zeros(0)).shape[:1] != (input_size,):
    raise UserError(
      f'params in {workdir} do not fit the dataset (need W1 ({input_size}, H)): '
      'pass the dataset the run was trained on'
    )
  labels = dataset.test_labels
  if test_predictions is None:
    split = {'test': (dataset.test_images, labels)}
    test_predictions = functools.partial(
      evaluation.evaluate(params, split).predictions, 'test'
    )
  config_path = workdir / 'config.json'
  train_label = 'train'
  if config_path.is_file():  # the curves' train accuracy is on a subset
    size = workdir_lib.read_json(config_path).get('train_eval_size')
    if size:
      num_train = len(dataset.train_labels)
      train_label = f'train ({progress.subset(min(size, num_train), num_train)})'
  written = [
    learning_curves(metrics, plots_dir / 'learning_curves.png', train_label),
    weights_plot(params, dataset.image_shape, plots_dir / 'weights.png'),
  ]
  predictions = test_predictions()
  return [
    *written,
    confusion_plot(
      confusion_matrix(labels, predictions, dataset.num_classes),
      plots_dir / 'confusion.png',
    ),
    misclassified_plot(
      dataset.test_images,
      labels,
      predictions,
      dataset.image_shape,
      plots_dir / 'misclassified.png',
    ),
  ]
