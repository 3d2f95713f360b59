"""Reads and verifies the four IDX gzip files of a dataset, downloading absent ones.

Every file is checked for structure (gzip stream, magic number, dimensions, header
count against payload, label range) and then against the sha256 of its
uncompressed IDX content, so any gzip of the genuine data passes. A file absent
from the folder is fetched from the dataset's mirror with `mlp.download`, which
only writes it once it has passed the same checks.
"""

import contextlib
import dataclasses
import gzip
import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlp import download
from mlp.download import BadContentError
from mlp.errors import UserError

if TYPE_CHECKING:
  from mlp.data import DatasetSpec

_IMAGES_MAGIC = 0x00000803  # IDX: unsigned bytes, 3 dimensions (count, rows, cols).
_LABELS_MAGIC = 0x00000801  # IDX: unsigned bytes, 1 dimension (count).
_ROLES = ('train_images', 'train_labels', 'test_images', 'test_labels')

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


def load(spec: 'DatasetSpec', directory: Path, url: str) -> Arrays:
  """Reads (downloading where absent) and checks the four IDX files of `spec`.

  Checks go from the most specific to the most general: each file's structure,
  then that a split's image and label counts agree, then the expected counts,
  then the content checksums, which catch whatever else is wrong.

  Args:
    spec: the registry entry: file names, counts, checksums, mirror.
    directory: the folder that holds the files (absent ones are downloaded into it).
    url: base URL of the mirror to download absent files from.

  Returns:
    train images (num_train, 784) uint8, train labels (num_train,) int32, test
    images (num_test, 784) uint8, test labels (num_test,) int32.

  Raises:
    UserError: a bad URL, a failed download, or a missing or corrupt file.
  """
  url = url if url.endswith('/') else url + '/'
  if not url.startswith(('http://', 'https://')):
    raise UserError(
      f'config field data_url={url!r} is not an http(s) URL: set --config.data_url to '
      f'a mirror such as {spec.url}'
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
