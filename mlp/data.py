"""MNIST-style datasets as host NumPy arrays: the registry, loading and splits.

`load_dataset` returns a `Dataset` of uint8 images flattened to (N, 784) and int32
labels, split into train (the first `len(train) - num_val` images of the official
training file), val (its last `num_val`) and test (the official test file).

With `source='idx'` it reads the four IDX gzip files of a dataset from a directory
(by default the repo's vendored `data/<name>/`), downloading absent ones from the
dataset's mirror; `mlp.idx` reads and verifies them. With `source='tfds'` it reads
a TFDS dataset prepared in array_record format via `mlp.tfds_source`, which needs
no TensorFlow.
"""

import dataclasses
import operator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mlp import hparams, idx, tfds_source
from mlp.errors import UserError

SOURCES = hparams.DATA_SOURCE.values  # declared once, with the config fields
_REPO_DATA_DIR = Path(__file__).resolve().parent.parent / 'data'


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Splits as host NumPy arrays: images uint8 (N, 784) flattened row-major, labels int32 (N,).

  A user's own arrays (`from_arrays`) may have other input shapes `(N, ...)`
  and float inputs; `image_shape` is then one input's shape.
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  val_images: np.ndarray
  val_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  image_shape: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A registry entry: where a dataset's IDX files come from and what they hold.

  Attributes:
    name: registry key, also the folder name under `data/`.
    filenames: IDX gzip file names, one per role (train images, train labels,
      test images, test labels), as found on the mirror.
    sha256: hex sha256 of each file's uncompressed IDX content, same order.
    num_train: examples in the official training file.
    num_test: examples in the official test file.
    url: mirror base URL; a file's URL is this plus its name.
    num_classes: labels lie in [0, num_classes).
    image_shape: (rows, cols) of each image.
    tfds_name: the TFDS name of the same dataset ('' if none).
    system_dirs: read-only folders (e.g. of a Debian package) that may hold the
      files; used when data_dir is '' and the repo's folder lacks them.
  """

  name: str
  filenames: tuple[str, str, str, str]
  sha256: tuple[str, str, str, str]
  num_train: int
  num_test: int
  url: str
  num_classes: int = 10
  image_shape: tuple[int, int] = (28, 28)
  tfds_name: str = ''
  system_dirs: tuple[str, ...] = ()


_MNIST_FILENAMES = (
  'train-images-idx3-ubyte.gz',
  'train-labels-idx1-ubyte.gz',
  't10k-images-idx3-ubyte.gz',
  't10k-labels-idx1-ubyte.gz',
)

DATASETS: dict[str, DatasetSpec] = {
  'mnist': DatasetSpec(
    name='mnist',
    filenames=_MNIST_FILENAMES,
    sha256=(
      'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
      '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
      '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
      'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
    ),
    num_train=60_000,
    num_test=10_000,
    url='https://storage.googleapis.com/cvdf-datasets/mnist/',
    tfds_name='mnist',
  ),
  'fashion_mnist': DatasetSpec(
    name='fashion_mnist',
    filenames=_MNIST_FILENAMES,
    sha256=(
      'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
      'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
      '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
      '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
    ),
    num_train=60_000,
    num_test=10_000,
    url='https://storage.googleapis.com/tensorflow/tf-keras-datasets/',
    tfds_name='fashion_mnist',
    system_dirs=('/usr/share/datasets/fashion-mnist',),
  ),
}


def default_data_dir(name: str) -> Path:
  """The repo's folder for dataset `name`: `<repo>/data/<name>/`."""
  return _REPO_DATA_DIR / name


def load_dataset(
  name: str = 'mnist',
  source: str = 'idx',
  data_dir: str = '',
  num_val: int = 5000,
  download_url: str | None = None,
) -> Dataset:
  """Loads a dataset from the registry `DATASETS` and splits it.

  Args:
    name: a key of `DATASETS`, e.g. 'mnist'.
    source: 'idx' (IDX gzip files) or 'tfds' (a prepared TFDS dataset).
    data_dir: for 'idx', the folder of the IDX files ('' = `default_data_dir(name)`);
      for 'tfds', the TFDS data dir ('' = TFDS's default).
    num_val: how many of the last training examples form the val split.
    download_url: base URL of a mirror for absent IDX files (default: the registry's).

  Returns:
    A `Dataset`: train (num_train - num_val, 784), val (num_val, 784) and test
    (num_test, 784) uint8 images with int32 labels of shape (N,).

  Raises:
    UserError: unknown name or source, bad num_val, or missing/corrupt data.
  """
  if name not in DATASETS:
    raise UserError(
      f'unknown dataset {name!r}; choose one of {", ".join(sorted(DATASETS))}'
    )
  spec = DATASETS[name]
  num_val = _check_num_val(num_val, spec.num_train)
  if source == 'idx':
    directory = _idx_directory(spec, data_dir)
    arrays = idx.load(spec, directory, download_url or spec.url)
  elif source == 'tfds':
    arrays = tfds_source.load(spec, data_dir)
  else:
    raise UserError(
      f'unknown data source {source!r}; choose one of {", ".join(SOURCES)}'
    )
  train_images, train_labels, test_images, test_labels = arrays
  num_train = len(train_images) - num_val
  return Dataset(
    train_images=train_images[:num_train],
    train_labels=train_labels[:num_train],
    val_images=train_images[num_train:],
    val_labels=train_labels[num_train:],
    test_images=test_images,
    test_labels=test_labels,
    num_classes=spec.num_classes,
    image_shape=spec.image_shape,
  )


# The config fields `from_config` reads.
CONFIG_FIELDS = ('dataset', 'data_source', 'data_dir', 'data_url', 'num_val')


def from_config(config) -> Dataset:
  """The dataset a config names (`dataset`, `data_source`, `data_dir`, ...)."""
  return load_dataset(
    name=config.dataset,
    source=config.data_source,
    data_dir=config.data_dir,
    num_val=config.num_val,
    download_url=config.data_url or None,
  )


def from_arrays(
  train: tuple, val: tuple, test: tuple, num_classes: int | None = None
) -> Dataset:
  """A dataset of a user's own arrays, checked before anything compiles.

  Args:
    train: `(inputs, labels)` of the training split: inputs `(N, ...)`, uint8
      images (scaled to [0, 1] on the device, as MNIST's) or floats (used as
      they are; float64 becomes float32); integer class labels `(N,)`.
    val: `(inputs, labels)` of the split evaluated during training.
    test: `(inputs, labels)` of the split of the final report.
    num_classes: labels lie in `[0, num_classes)` (default: the largest
      label plus one).

  Returns:
    The `Dataset`; its `image_shape` is one input's shape.

  Raises:
    UserError: a split whose inputs and labels differ in length, labels that
      are not integer classes `(N,)` in range, inputs of another dtype, or
      splits whose inputs differ in shape.
  """
  splits = {}
  for name, split in (('train', train), ('val', val), ('test', test)):
    if not isinstance(split, tuple | list) or len(split) != 2:
      raise UserError(f'the {name} split must be a pair (inputs, labels)')
    splits[name] = _checked_split(name, *split)
  shapes = {name: x.shape[1:] for name, (x, _) in splits.items()}
  if len(set(shapes.values())) > 1:
    raise UserError(
      f'the splits hold inputs of different shapes ({shapes}): give every split '
      'inputs of one shape'
    )
  labels = [y for _, y in splits.values() if len(y)]
  largest = max(int(y.max()) for y in labels) if labels else 0
  num_classes = largest + 1 if num_classes is None else num_classes
  for name, (_, y) in splits.items():
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
      raise UserError(
        f'the {name} labels lie in [{y.min()}, {y.max()}], outside the '
        f'{num_classes} classes [0, {num_classes}): give class indices from 0'
      )
  (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits.values()
  for name, (x, _) in (('train', splits['train']), ('val', splits['val'])):
    if not len(x):
      raise UserError(f'the {name} split is empty: give it at least one example')
  return Dataset(
    train_x, train_y, val_x, val_y, test_x, test_y, num_classes, tuple(shapes['train'])
  )


def _checked_split(name: str, inputs, labels) -> tuple[np.ndarray, np.ndarray]:
  """One split's `(inputs, labels)` as NumPy arrays, or a UserError."""
  inputs, labels = np.asarray(inputs), np.asarray(labels)
  if inputs.ndim < 2:
    raise UserError(
      f'the {name} inputs have shape {inputs.shape}: give (examples, ...) arrays, '
      'one row per example'
    )
  if len(inputs) != len(labels):
    raise UserError(
      f'the {name} split has {len(inputs)} inputs but {len(labels)} labels: give '
      'one label per input'
    )
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise UserError(
      f'the {name} labels are {labels.dtype} of shape {labels.shape}: give integer '
      f'class indices of shape ({len(inputs)},), not one-hot rows'
    )
  if inputs.dtype != np.uint8 and not np.issubdtype(inputs.dtype, np.floating):
    raise UserError(
      f'the {name} inputs are {inputs.dtype}: give uint8 images (scaled to [0, 1] '
      'by the engine) or floats'
    )
  if inputs.dtype == np.float64:
    inputs = inputs.astype(np.float32)
  return inputs, labels.astype(np.int32)


def scale_images(images: jax.Array) -> jax.Array:
  """Maps uint8 pixels (..., 784) to float32 in [0, 1], same shape; float
  inputs (a user's own data, already scaled) go through as they are."""
  if images.dtype == np.uint8:
    return images.astype(jnp.float32) / 255.0
  return images


def _check_num_val(num_val: int, num_train: int) -> int:
  """Returns num_val as an int if 1 <= num_val < num_train, else raises UserError."""
  try:
    if isinstance(num_val, bool):
      raise TypeError
    num_val = operator.index(num_val)
  except TypeError:
    raise UserError(
      f'num_val must be an integer, got {num_val!r}; set it to a count such as 5000'
    ) from None
  if not 1 <= num_val < num_train:
    raise UserError(
      f'num_val={num_val} is out of range: it must be at least 1 and less than the'
      f' {num_train} training examples; the default is 5000'
    )
  return num_val


def _idx_directory(spec: DatasetSpec, data_dir: str) -> Path:
  """The folder to read `spec`'s IDX files from (and download absent ones into)."""
  if data_dir:
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
      problem = (
        'is not a directory; point data_dir at a directory'
        if directory.exists()
        else 'does not exist; create it (absent files are then downloaded into it)'
      )
      raise UserError(
        f'data directory {directory} {problem}, or leave data_dir empty to use'
        f' {default_data_dir(spec.name)}'
      )
    return directory
  directory = default_data_dir(spec.name)
  if all((directory / name).exists() for name in spec.filenames):
    return directory
  for system_dir in map(Path, spec.system_dirs):
    if all((system_dir / name).is_file() for name in spec.filenames):
      logging.info('Reading %s from %s', spec.name, system_dir)
      return system_dir
  return directory
