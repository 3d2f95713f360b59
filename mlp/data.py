"""MNIST-style datasets as host NumPy arrays: registry, IDX reader, TFDS reader, splits.

`load_dataset` returns a `Dataset` of uint8 images flattened to (N, 784) and int32
labels, split into train (the first `len(train) - num_val` images of the official
training file), val (its last `num_val`) and test (the official test file).

With `source='idx'` it reads the four IDX gzip files of a dataset from a directory
(by default the repo's vendored `data/<name>/`), downloading absent ones from the
dataset's mirror. Every file is checked for structure (gzip stream, magic number,
dimensions, header count against payload, label range) and then against the
sha256 of its uncompressed IDX content, so any gzip of the genuine data passes.
With `source='tfds'` it reads a TFDS dataset prepared in array_record format via
`tfds.data_source`, which needs no TensorFlow.
"""

import contextlib
import dataclasses
import gzip
import hashlib
import operator
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mlp import download
from mlp.download import BadContentError
from mlp.errors import UserError

SOURCES = ('idx', 'tfds')
_REPO_DATA_DIR = Path(__file__).resolve().parent.parent / 'data'
_IMAGES_MAGIC = 0x00000803  # IDX: unsigned bytes, 3 dimensions (count, rows, cols).
_LABELS_MAGIC = 0x00000801  # IDX: unsigned bytes, 1 dimension (count).
_ROLES = ('train_images', 'train_labels', 'test_images', 'test_labels')


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Splits as host NumPy arrays: images uint8 (N, 784) flattened row-major, labels int32 (N,)."""

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
    filenames: IDX gzip file names, one per role in `_ROLES` (train images, train
      labels, test images, test labels), as found on the mirror.
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
    arrays = _load_idx(spec, data_dir, download_url or spec.url)
  elif source == 'tfds':
    arrays = _load_tfds(spec, data_dir)
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


def scale_images(images: jax.Array) -> jax.Array:
  """Maps uint8 pixels (..., 784) to float32 in [0, 1], same shape."""
  return images.astype(jnp.float32) / 255.0


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


# IDX files.

_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class _IdxFile:
  """Where one of a dataset's four IDX files lies and what it must hold."""

  path: Path
  kind: str  # 'images' or 'labels'
  count: int
  sha256: str
  image_shape: tuple[int, int]
  num_classes: int

  @property
  def content_size(self) -> int:
    """Bytes of uncompressed IDX content of the genuine file."""
    rows, cols = self.image_shape
    return 16 + self.count * rows * cols if self.kind == 'images' else 8 + self.count


def _load_idx(spec: DatasetSpec, data_dir: str, url: str) -> _Arrays:
  """Reads (downloading where absent) and checks the four IDX files of `spec`.

  Checks go from the most specific to the most general: each file's structure,
  then that a split's image and label counts agree, then the expected counts,
  then the content checksums, which catch whatever else is wrong.

  Returns:
    train images (num_train, 784) uint8, train labels (num_train,) int32, test
    images (num_test, 784) uint8, test labels (num_test,) int32.
  """
  directory = _idx_directory(spec, data_dir)
  url = url if url.endswith('/') else url + '/'
  if not url.startswith(('http://', 'https://')):
    raise UserError(
      f'download_url {url!r} is not an http(s) URL; give a mirror such as {spec.url}'
    )
  counts = (spec.num_train, spec.num_train, spec.num_test, spec.num_test)
  files = [
    _IdxFile(
      directory / filename,
      role.split('_')[1],
      count,
      sha256,
      spec.image_shape,
      spec.num_classes,
    )
    for role, filename, count, sha256 in zip(
      _ROLES, spec.filenames, counts, spec.sha256, strict=True
    )
  ]
  arrays, sha256s = zip(*(_read_or_fetch(file, url) for file in files), strict=True)
  for images, labels in ((0, 1), (2, 3)):
    num_images, num_labels = len(arrays[images]), len(arrays[labels])
    if num_images != num_labels:
      count = files[images].count
      culprit = files[labels if num_images == count else images].path
      raise UserError(
        f'data files {files[images].path} ({num_images} images) and'
        f' {files[labels].path} ({num_labels} labels) disagree, and {spec.name}'
        f' has {count} of each; delete {culprit} to re-download it from {url},'
        f' or copy a genuine copy into {directory}'
      )
  for file, array, sha256 in zip(files, arrays, sha256s, strict=True):
    with _blaming(file.path, url):
      _verify(file, array, sha256)
  return arrays


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


def _read_or_fetch(file: _IdxFile, url: str) -> tuple[np.ndarray, str]:
  """Parses `file.path`, first downloading it from `url` (fully checked) if absent."""
  if file.path.exists():
    with _blaming(file.path, url):
      return _parse_idx(file.path, file)

  def parse_and_verify(path: Path) -> tuple[np.ndarray, str]:
    array, sha256 = _parse_idx(path, file)
    _verify(file, array, sha256)
    return array, sha256

  # Deflate never grows data by more than a few bytes per 16 KiB block.
  max_bytes = file.content_size + file.content_size // 100 + 65536
  return download.fetch(url + file.path.name, file.path, parse_and_verify, max_bytes)


@contextlib.contextmanager
def _blaming(path: Path, url: str) -> Iterator[None]:
  """Turns a `BadContentError` about local file `path` into a one-line UserError."""
  try:
    yield
  except BadContentError as e:
    raise UserError(
      f'data file {path} {e}; delete it to re-download it from {url}, or copy a'
      f' genuine copy into {path.parent}'
    ) from None


def _parse_idx(path: Path, file: _IdxFile) -> tuple[np.ndarray, str]:
  """Reads an IDX gzip file and checks its structure against `file`.

  Returns:
    images (count, rows * cols) uint8 or labels (count,) int32, and the hex sha256
    of the uncompressed content.

  Raises:
    BadContentError: the file is unreadable or is not a well-formed IDX file.
  """
  content = _gunzip(path, file.content_size)
  images = file.kind == 'images'
  header_size, magic = (16, _IMAGES_MAGIC) if images else (8, _LABELS_MAGIC)
  if len(content) < header_size:
    raise BadContentError(
      f'is truncated: {len(content)} bytes of IDX content, less than its'
      f' {header_size}-byte header'
    )
  found_magic = int.from_bytes(content[:4], 'big')
  if found_magic != magic:
    other_kind, other_magic = (
      ('labels', _LABELS_MAGIC) if images else ('images', _IMAGES_MAGIC)
    )
    what = (
      f'an IDX {other_kind}'
      if found_magic == other_magic
      else f'not an IDX {file.kind}'
    )
    raise BadContentError(
      f'has magic number 0x{found_magic:08x}, not 0x{magic:08x}: it is {what} file'
    )
  count = int.from_bytes(content[4:8], 'big')
  item_size = 1
  if images:
    shape = (
      int.from_bytes(content[8:12], 'big'),
      int.from_bytes(content[12:16], 'big'),
    )
    if shape != file.image_shape:
      rows, cols = file.image_shape
      raise BadContentError(
        f'holds {shape[0]}x{shape[1]} images, expected {rows}x{cols}'
      )
    item_size = shape[0] * shape[1]
  if len(content) > file.content_size:
    raise BadContentError(
      f'holds more than the {file.content_size} bytes of IDX content of a genuine'
      f' file (its header declares {count} {file.kind})'
    )
  declared_size = header_size + count * item_size
  if len(content) != declared_size:
    problem = 'is truncated' if len(content) < declared_size else 'is inconsistent'
    raise BadContentError(
      f'{problem}: its header declares {count} {file.kind} ({declared_size} bytes)'
      f' but it holds {len(content)} bytes of IDX content'
    )
  sha256 = hashlib.sha256(content).hexdigest()
  values = np.frombuffer(content, np.uint8, offset=header_size)
  if images:
    return values.reshape(count, item_size), sha256
  if count and values.max() >= file.num_classes:
    index = int(np.argmax(values >= file.num_classes))
    raise BadContentError(
      f'holds label {values[index]} at index {index}, outside 0..{file.num_classes - 1}'
    )
  return values.astype(np.int32), sha256


def _gunzip(path: Path, max_bytes: int) -> bytearray:
  """The uncompressed content of gzip file `path`, at most `max_bytes + 1` bytes."""
  content = bytearray()
  try:
    with gzip.open(path, 'rb') as stream:
      while len(content) <= max_bytes:
        chunk = stream.read(min(1 << 22, max_bytes + 1 - len(content)))
        if not chunk:
          break
        content += chunk
  except EOFError:
    raise BadContentError(
      f'is truncated: its gzip stream ends after {len(content)} bytes of IDX'
      f' content, expected {max_bytes}'
    ) from None
  except (gzip.BadGzipFile, zlib.error) as e:
    raise BadContentError(f'is not a valid gzip file ({_one_line(e)})') from None
  except OSError as e:
    raise BadContentError(f'cannot be read ({e.strerror or _one_line(e)})') from None
  return content


def _verify(file: _IdxFile, array: np.ndarray, sha256: str) -> None:
  """Checks a parsed file's example count, then its content checksum."""
  if len(array) != file.count:
    raise BadContentError(f'holds {len(array)} {file.kind}, expected {file.count}')
  if sha256 != file.sha256:
    raise BadContentError(
      f'has the wrong content: the sha256 of its uncompressed IDX data is'
      f' {sha256}, expected {file.sha256}'
    )


def _one_line(error: BaseException) -> str:
  return ' '.join(str(error).split())


# TFDS.


def _load_tfds(spec: DatasetSpec, data_dir: str) -> _Arrays:
  """Reads the train and test splits of a prepared TFDS dataset (array_record).

  Returns:
    train images (num_train, 784) uint8, train labels (num_train,) int32, test
    images (num_test, 784) uint8, test labels (num_test,) int32, in TFDS order.
  """
  if not spec.tfds_name:
    raise UserError(f'dataset {spec.name} has no TFDS counterpart; use source idx')
  if data_dir and not (Path(data_dir).expanduser() / spec.tfds_name).is_dir():
    problem = (
      'holds no' if Path(data_dir).expanduser().is_dir() else 'does not exist, so no'
    )
    raise UserError(
      f'TFDS data directory {data_dir} {problem} prepared {spec.tfds_name} folder;'
      f' point data_dir at the folder that holds {spec.tfds_name}/<version>/, or'
      f' use source idx'
    )
  try:
    import tensorflow_datasets as tfds  # Slow to import; only this source needs it.
  except Exception as e:  # Broken installs raise more than ImportError.
    raise UserError(
      f'source tfds needs tensorflow-datasets, array-record, pillow and'
      f' importlib-resources, but importing tensorflow_datasets failed'
      f' ({_one_line(e)}); run make install, or use source idx'
    ) from None
  where = data_dir or 'the default TFDS data directory'
  arrays = []
  for split, count in (('train', spec.num_train), ('test', spec.num_test)):
    try:
      source = tfds.data_source(
        spec.tfds_name, split=split, data_dir=data_dir or None, download=False
      )
    except Exception as e:  # TFDS raises many types for absent data.
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise UserError(
        f'cannot open the {split} split of TFDS dataset {spec.tfds_name} in'
        f' {where} ({type(e).__name__}: {first_line}); prepare it in array_record'
        f' format (tfds build --file_format=array_record), or use source idx'
      ) from None
    if len(source) != count:
      raise UserError(
        f'TFDS dataset {spec.tfds_name} in {where} has {len(source)} {split}'
        f' examples, expected {count}; re-prepare it, or use source idx'
      )
    arrays.extend(_read_tfds_split(source, spec, split, where))
  return tuple(arrays)


def _read_tfds_split(
  source: Sequence[dict[str, Any]], spec: DatasetSpec, split: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
  """All examples of a TFDS data source as images (N, 784) uint8, labels (N,) int32."""
  indices = list(range(len(source)))
  try:
    # Batch access reads the records in one call; about 3x faster than a loop.
    if hasattr(source, '__getitems__'):
      records = source.__getitems__(indices)
    else:
      records = [source[index] for index in indices]
    images = np.stack([record['image'] for record in records])
    labels = np.array([record['label'] for record in records], dtype=np.int64)
  except Exception as e:  # Corrupt records fail inside decoders.
    raise UserError(
      f'cannot read the {split} split of TFDS dataset {spec.tfds_name} in {where}'
      f' ({type(e).__name__}: {_one_line(e)}); re-prepare it, or use source idx'
    ) from None
  rows, cols = spec.image_shape
  if images.dtype != np.uint8 or images.shape[1:] not in (
    (rows, cols),
    (rows, cols, 1),
  ):
    raise UserError(
      f'TFDS dataset {spec.tfds_name} in {where} has {split} images of shape'
      f' {images.shape[1:]} and dtype {images.dtype}, expected ({rows}, {cols}, 1)'
      f' uint8; re-prepare it, or use source idx'
    )
  if labels.size and not 0 <= labels.min() <= labels.max() < spec.num_classes:
    raise UserError(
      f'TFDS dataset {spec.tfds_name} in {where} has {split} labels outside'
      f' 0..{spec.num_classes - 1}; re-prepare it, or use source idx'
    )
  return images.reshape(len(images), rows * cols), labels.astype(np.int32)
