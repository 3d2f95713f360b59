"""PNG plots of a workdir, written under `WORKDIR/plots/` from the workdir's files.

A train workdir gets `learning_curves.png`, `weights.png` (the first layer's
weights as 28x28 tiles), `confusion.png` and `misclassified.png` (both on the
test split); a sweep workdir gets `heatmap_h{H}.png` (validation accuracy over
learning rate x lambda, one per hidden size) and `best_curves.png`.

Figures are `matplotlib.figure.Figure` objects rendered by Agg, never pyplot,
so nothing here touches a global backend or leaves figures open.
"""

import json
import math
from pathlib import Path

import matplotlib
import matplotlib.figure
import numpy as np

from mlp import data, model
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
)


def new_figure(width: float, height: float) -> matplotlib.figure.Figure:
  return matplotlib.figure.Figure(figsize=(width, height), layout='constrained')


def save_figure(fig: matplotlib.figure.Figure, path: Path) -> Path:
  with workdir_lib.atomic_open(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=100)
  return path


def plots_directory(workdir: Path) -> Path:
  if not workdir.is_dir():
    raise UserError(f'workdir {workdir} does not exist: pass the --workdir of a run')
  path = workdir / 'plots'
  path.mkdir(exist_ok=True)
  return path


def read_jsonl(path: Path) -> list[dict]:
  if not path.is_file():
    raise UserError(f'no {path.name} in {path.parent}: run training there first')
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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


def learning_curves(metrics: list[dict], path: Path) -> Path:
  """Loss, train/val accuracy and learning rate against the iteration."""
  step = [m['step'] for m in metrics]
  marker = point_marker(len(step))
  fig = new_figure(14, 4.2)
  loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
  loss_ax.plot(step, [m['train_loss'] for m in metrics], marker=marker)
  loss_ax.set(title='Training loss', xlabel='iteration', ylabel='mean loss')
  acc_ax.plot(
    step, [m['train_accuracy'] for m in metrics], marker=marker, label='train'
  )
  acc_ax.plot(step, [m['val_accuracy'] for m in metrics], marker=marker, label='val')
  acc_ax.set(title='Accuracy', xlabel='iteration', ylabel='accuracy')
  acc_ax.legend(loc='lower right')
  lr_ax.plot(step, [m['learning_rate'] for m in metrics], marker=marker, color='C2')
  lr_ax.set(title='Learning rate', xlabel='iteration', ylabel='learning rate')
  for ax in (loss_ax, acc_ax, lr_ax):
    ax.grid(alpha=0.3)
  return save_figure(fig, path)


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
  grid_cols = math.ceil(math.sqrt(count))
  grid_rows = math.ceil(count / grid_cols)
  mosaic = np.ones((grid_rows * (rows + 1) + 1, grid_cols * (cols + 1) + 1))
  for i in range(count):
    tile = weights[:, i].reshape(rows, cols).astype(np.float64)
    span = tile.max() - tile.min()
    tile = (tile - tile.min()) / span if span > 0 else np.full_like(tile, 0.5)
    top, left = 1 + (i // grid_cols) * (rows + 1), 1 + (i % grid_cols) * (cols + 1)
    mosaic[top : top + rows, left : left + cols] = tile
  return mosaic


def weights_plot(params: dict, image_shape: tuple[int, int], path: Path) -> Path:
  """`W1`'s columns as image tiles, as in the cs231n course."""
  hidden_size = params['W1'].shape[1]
  fig = new_figure(7, 7.4)
  ax = fig.subplots()
  ax.imshow(weight_mosaic(params['W1'], image_shape), cmap='gray', vmin=0, vmax=1)
  shown = min(hidden_size, MAX_WEIGHT_TILES)
  ax.set_title(
    f'First-layer weights W1: {shown} of {hidden_size} hidden units\n'
    '(each tile scaled to its own range)'
  )
  ax.set_axis_off()
  return save_figure(fig, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int):
  """`(C, C)` counts: row = true class, column = predicted class."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predictions), 1)
  return counts


def confusion_plot(counts: np.ndarray, path: Path) -> Path:
  """The test confusion matrix with every count written in its cell."""
  num_classes = counts.shape[0]
  fig = new_figure(7, 6.2)
  ax = fig.subplots()
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
  return save_figure(fig, path)


def misclassified_plot(
  images: np.ndarray,
  labels: np.ndarray,
  predictions: np.ndarray,
  image_shape: tuple[int, int],
  path: Path,
) -> Path:
  """The first misclassified test images, titled 'true 7 / pred 2'."""
  wrong = np.flatnonzero(predictions != labels)[:NUM_MISCLASSIFIED]
  grid_cols = 5
  grid_rows = max(math.ceil(len(wrong) / grid_cols), 1)
  fig = new_figure(8, 1.7 * grid_rows + 0.6)
  axes = fig.subplots(grid_rows, grid_cols, squeeze=False).ravel()
  for ax in axes:
    ax.set_axis_off()
  for ax, i in zip(axes, wrong, strict=False):
    ax.imshow(images[i].reshape(image_shape), cmap='gray', vmin=0, vmax=255)
    ax.set_title(f'true {labels[i]} / pred {predictions[i]}', fontsize=10)
  total = int(np.sum(predictions != labels))
  fig.suptitle(f'Misclassified test images: first {len(wrong)} of {total}')
  if not len(wrong):
    axes[0].text(0, 0.5, 'no test image is misclassified', fontsize=12)
  return save_figure(fig, path)


def write_train_plots(workdir: str | Path, dataset: data.Dataset) -> list[Path]:
  """Writes the plots of a `--mode=train` workdir.

  Args:
    workdir: a directory holding `metrics.jsonl` and `params.npz`.
    dataset: the run's dataset; its test split feeds the confusion matrix and
      the misclassified images (uint8 images `(N, 784)`).

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
  logits = model.apply(params, data.scale_images(dataset.test_images))
  predictions = np.asarray(np.argmax(logits, axis=-1))
  labels = dataset.test_labels
  return [
    learning_curves(metrics, plots_dir / 'learning_curves.png'),
    weights_plot(params, dataset.image_shape, plots_dir / 'weights.png'),
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
