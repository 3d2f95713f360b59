"""Plots and report.md of a real (tiny) train workdir and sweep workdir."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlp import plots, report, sweep_plots
from mlp import workdir as workdir_lib
from mlp.errors import UserError

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
TRAIN_PLOTS = [
  'learning_curves.png',
  'weights.png',
  'confusion.png',
  'misclassified.png',
]


@pytest.fixture
def train_workdir(trained_workdir):
  return trained_workdir[0]


@pytest.fixture
def sweep_dir(sweep_workdir):
  return sweep_workdir[0]


def assert_good_png(path: Path, min_size: tuple[int, int] = (300, 250)) -> None:
  assert path.is_file(), path
  assert path.read_bytes()[:8] == PNG_MAGIC, path
  with Image.open(path) as image:
    assert image.width >= min_size[0] and image.height >= min_size[1], image.size
    assert image.width <= 2000 and image.height <= 2000, image.size
    pixels = np.asarray(image.convert('L'), np.float32)
  assert pixels.std() > 10, f'{path.name} looks blank'


def assert_links(report_path: Path, names: list[str]) -> None:
  text = report_path.read_text()
  for name in names:
    assert f'](plots/{name})' in text, name


@pytest.mark.xdist_group('trained_workdir')
def test_train_plots_and_report(train_workdir):
  """What `main.py --config=configs/test.py` drew and wrote."""
  assert sorted(p.name for p in (train_workdir / 'plots').iterdir()) == sorted(
    TRAIN_PLOTS
  )  # and no temporary files left
  for name in TRAIN_PLOTS:
    assert_good_png(train_workdir / 'plots' / name)
  report_path = train_workdir / 'report.md'
  assert_links(report_path, TRAIN_PLOTS)
  text = report_path.read_text()
  assert '| test accuracy |' in text and '| hidden_size | 16 |' in text


@pytest.mark.xdist_group('sweep_workdir')
def test_sweep_plots_and_report(sweep_dir):
  paths = sweep_plots.write_sweep_plots(sweep_dir)
  names = [p.name for p in paths]
  assert names == ['heatmap_h8.png', 'heatmap_h16.png', 'best_curves.png']
  for path in paths:
    assert_good_png(path)
  report_path = report.write_sweep_report(sweep_dir)
  assert_links(report_path, names)
  text = report_path.read_text()
  assert '## Top 8 of 8 models' in text and '| test_accuracy |' in text
  table = [line for line in text.splitlines() if line.startswith('| 8 |')]
  assert len(table) == 4  # the H=8 rows of the results table


def test_weight_mosaic_tiles_are_scaled_separately():
  weights = np.stack([np.arange(4.0), 10 * np.arange(4.0), np.ones(4)], axis=1)
  mosaic = plots.weight_mosaic(weights, (2, 2), max_tiles=2)
  assert mosaic.shape == (4, 7)  # one row of two 2x2 tiles, lines around each
  np.testing.assert_allclose(mosaic[1:3, 1:3], mosaic[1:3, 4:6])
  assert mosaic.min() == 0 and mosaic.max() == 1


def test_weight_mosaic_is_each_hidden_units_weights_reshaped_and_normalised():
  rng = np.random.default_rng(0)
  weights = rng.normal(size=(12, 7))  # 3x4 images, 7 hidden units
  weights[:, 2] = 0.25  # a constant tile is drawn mid-gray
  fig = plots.weights_figure({'W1': weights}, (3, 4))
  (ax,) = fig.axes
  (image,) = ax.images  # one image, not one axes per unit
  mosaic = np.asarray(image.get_array())
  np.testing.assert_array_equal(mosaic, plots.weight_mosaic(weights, (3, 4)))
  assert mosaic.shape == (3 * 4 + 1, 3 * 5 + 1)  # 3x3 places for 7 tiles
  for unit in range(7):
    top, left = 1 + (unit // 3) * 4, 1 + (unit % 3) * 5
    tile = weights[:, unit].reshape(3, 4)
    span = tile.max() - tile.min()
    expected = np.full((3, 4), 0.5) if span == 0 else (tile - tile.min()) / span
    np.testing.assert_allclose(mosaic[top : top + 3, left : left + 4], expected)
  lines = np.ones_like(mosaic, bool)
  for unit in range(7):
    top, left = 1 + (unit // 3) * 4, 1 + (unit % 3) * 5
    lines[top : top + 3, left : left + 4] = False
  assert np.all(mosaic[lines] == 1)  # separators and the two empty places
  assert 'W1: 7 of 7 hidden units' in ax.get_title()


def test_misclassified_picture_holds_those_digits_with_their_captions():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (40, 12)).astype(np.uint8)  # 3x4 digits
  labels = rng.integers(0, 10, 40)
  predictions = labels.copy()
  wrong = np.array([1, 4, 5, 9, 17, 18, 30])
  predictions[wrong] = (labels[wrong] + 3) % 10
  fig = plots.misclassified_figure(images, labels, predictions, (3, 4), grid_cols=3)
  (ax,) = fig.axes
  (image,) = ax.images
  grid = np.ma.filled(image.get_array().astype(np.float64), np.nan)
  # The digits' pixels, without the blank bands and lines around them.
  rows = np.flatnonzero(np.isfinite(grid).any(axis=1))
  cols = np.flatnonzero(np.isfinite(grid).any(axis=0))
  assert len(rows) == 3 * 3 and len(cols) == 3 * 4  # 3 rows of 3 places
  places = grid[np.ix_(rows, cols)].reshape(3, 3, 3, 4).transpose(0, 2, 1, 3)
  places = places.reshape(9, 3, 4)
  np.testing.assert_array_equal(places[:7], images[wrong].reshape(7, 3, 4))
  assert np.isnan(places[7:]).all()  # the last two places are empty
  captions = list(ax.texts)
  assert [t.get_text() for t in captions] == [
    f'true {labels[i]} / pred {predictions[i]}' for i in wrong
  ]
  for k, caption in enumerate(captions):  # each just above its digit
    x, y = caption.get_position()
    first_row = rows[(k // 3) * 3]
    assert first_row - 4 < y < first_row
    assert cols[(k % 3) * 4] <= x <= cols[(k % 3) * 4 + 3]
  assert fig.get_suptitle() == 'Misclassified test images: first 7 of 7'


def test_misclassified_shows_the_first_25():
  images = np.zeros((40, 4), np.uint8)
  labels, predictions = np.zeros(40, int), np.ones(40, int)
  fig = plots.misclassified_figure(images, labels, predictions, (2, 2))
  assert len(fig.axes[0].texts) == plots.NUM_MISCLASSIFIED == 25
  assert fig.get_suptitle() == 'Misclassified test images: first 25 of 40'


def test_confusion_picture_is_the_counts():
  counts = np.arange(9).reshape(3, 3)
  fig = plots.confusion_figure(counts)
  ax = fig.axes[0]
  np.testing.assert_array_equal(ax.images[0].get_array(), counts)
  assert [t.get_text() for t in ax.texts] == [str(c) for c in counts.ravel()]
  assert '(accuracy 0.3333)' in ax.get_title()


def test_format_value():
  assert [plots.format_value(v) for v in (1e-3, 0.5, 300, 1e-4, 2.5e-5)] == [
    '1e-3',
    '0.5',
    '300',
    '1e-4',
    '2.5e-5',
  ]


@pytest.mark.xdist_group('sweep_workdir')
def test_heatmap_marks_diverged_cells_and_one_axis_sweeps_get_line_plots(
  sweep_dir, tmp_path
):
  rows = sweep_plots.read_results(sweep_dir / 'results.csv')
  assert isinstance(rows[0]['hidden_size'], int)
  assert isinstance(rows[0]['diverged'], bool)
  for row in rows:
    row['diverged'] = row['learning_rate'] == 0.3 and row['l2_reg'] == 1e-4
  assert_good_png(sweep_plots.heatmap(rows, 'diverged cells', tmp_path / 'heat.png'))
  one_lr = [r for r in rows if r['learning_rate'] == 0.1]
  assert_good_png(
    sweep_plots.line_plot(one_lr, 'l2_reg', 'one lr', tmp_path / 'line.png')
  )


@pytest.mark.xdist_group('sweep_workdir')
def test_sweep_without_lr_or_lambda_variation_skips_heatmaps(sweep_dir, tmp_path):
  for name in ('config.json', 'curves.jsonl'):
    shutil.copy(sweep_dir / name, tmp_path / name)
  lines = (sweep_dir / 'results.csv').read_text().splitlines()
  header = lines[0].split(',')
  lr, l2 = header.index('learning_rate'), header.index('l2_reg')
  kept = [
    line
    for line in lines[1:]
    if float(line.split(',')[lr]) == 0.1 and float(line.split(',')[l2]) == 1e-4
  ]
  (tmp_path / 'results.csv').write_text('\n'.join([lines[0], *kept]) + '\n')
  paths = sweep_plots.write_sweep_plots(tmp_path)
  assert [p.name for p in paths] == ['best_curves.png']


def test_missing_workdir_files_are_user_errors(tmp_path, mnist):
  with pytest.raises(UserError, match='metrics.jsonl'):
    plots.write_train_plots(tmp_path, mnist)
  with pytest.raises(UserError, match='results.csv'):
    sweep_plots.write_sweep_plots(tmp_path)
  with pytest.raises(UserError, match='summary.json'):
    report.write_train_report(tmp_path)


def options_table(text: str) -> dict[str, str]:
  """The rows of report.md's 'Options in effect' table."""
  section = text.split('## Options in effect')[1].split('\n## ')[0]
  rows = [line.split(' | ') for line in section.splitlines() if line.startswith('| ')]
  return {name.removeprefix('| '): value.removesuffix(' |') for name, value in rows[1:]}


def test_the_report_shows_the_options_in_effect(tmp_path):
  """configs/fast.py: Adam, He init, cosine with warm-up, permutations; not
  the decay or init scale it does not use. One number format throughout."""
  from configs import fast

  config = fast.get_config().to_dict()
  workdir_lib.write_json(tmp_path / 'config.json', config)
  summary = {'val_accuracy': 0.98312, 'train_seconds': 12.3456, 'steps': 428}
  workdir_lib.write_json(tmp_path / 'summary.json', summary)
  text = report.write_train_report(tmp_path).read_text()
  assert options_table(text) == {
    'hidden_size': '384',
    'batch_size': '512',
    'learning_rate': '0.02',
    'l2_reg': '0',
    'seed': '0',
    'num_iters': '428',
    'warmup_iters': '100',
    'optimizer': 'adam',
    'lr_schedule': 'cosine',
    'sampling': 'permutation',
    'init': 'he',
    'compute_dtype': 'float32',
    'dataset': 'mnist',
  }
  assert '| validation accuracy | 0.9831 |' in text
  assert '| training seconds | 12.35 |' in text


@pytest.mark.xdist_group('sweep_workdir')
def test_a_sweep_report_shows_the_options_every_model_shares(sweep_dir):
  text = report.write_sweep_report(sweep_dir).read_text()
  options = options_table(text)
  assert {'hidden_size', 'learning_rate', 'l2_reg'}.isdisjoint(options)  # swept
  assert options['optimizer'] == 'sgd' and options['lr_decay'] == '0.95'
  assert '| swept: l2_reg | 0.0001, 0.01 |' in text
