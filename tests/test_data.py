"""Tests for mlp.data: the vendored MNIST, corrupt-file refusals, downloads, TFDS.

Corrupt-file and download tests use a tiny synthetic dataset registered under the
name 'tiny' (12 training and 4 test images), so they need no 47 MB files. The
download tests talk only to an HTTP server on 127.0.0.1; an autouse fixture makes
any other address fail the test.
"""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from mlp import data, download
from mlp.errors import UserError

MNIST_DIR = Path(__file__).resolve().parent.parent / 'data' / 'mnist'
TFDS_DIR = Path(__file__).resolve().parent.parent.parent / 'shared' / 'data' / 'tfds'
FASHION_DIR = Path('/usr/share/datasets/fashion-mnist')
FILENAMES = data.DATASETS['mnist'].filenames
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = FILENAMES
NUM_TINY_TRAIN, NUM_TINY_TEST = 12, 4


@pytest.fixture(autouse=True)
def _local_network_only(monkeypatch: pytest.MonkeyPatch) -> None:
  """Fails any download from an address other than 127.0.0.1; bypasses proxies."""
  monkeypatch.setenv('no_proxy', '127.0.0.1')
  monkeypatch.setenv('NO_PROXY', '127.0.0.1')
  urlopen = urllib.request.urlopen

  def local_urlopen(url: str, *args, **kwargs):
    host = urllib.parse.urlsplit(url).hostname
    assert host == '127.0.0.1', f'test tried to reach {url}'
    return urlopen(url, *args, **kwargs)

  monkeypatch.setattr(urllib.request, 'urlopen', local_urlopen)


def _raw_idx(path: Path, header_size: int) -> np.ndarray:
  """Reads an IDX gzip file without mlp.data: its payload as uint8 (N * item,)."""
  with gzip.open(path, 'rb') as stream:
    return np.frombuffer(stream.read(), np.uint8, offset=header_size)


def _images_idx(images: np.ndarray, count: int | None = None) -> bytes:
  """IDX content for uint8 images (N, rows, cols); `count` overrides the header."""
  count = len(images) if count is None else count
  rows, cols = images.shape[1:]
  header = b''.join(n.to_bytes(4, 'big') for n in (0x803, count, rows, cols))
  return header + images.astype(np.uint8).tobytes()


def _labels_idx(labels: np.ndarray, count: int | None = None) -> bytes:
  """IDX content for uint8 labels (N,); `count` overrides the header."""
  count = len(labels) if count is None else count
  return (
    (0x801).to_bytes(4, 'big')
    + count.to_bytes(4, 'big')
    + labels.astype(np.uint8).tobytes()
  )


@dataclasses.dataclass
class Tiny:
  """A synthetic dataset registered as 'tiny' and written into `directory`."""

  directory: Path
  contents: dict[str, bytes]  # file name -> genuine IDX content
  train_images: np.ndarray  # (12, 28, 28) uint8
  train_labels: np.ndarray  # (12,) uint8
  test_images: np.ndarray  # (4, 28, 28) uint8
  test_labels: np.ndarray  # (4,) uint8

  def write(self, filename: str, content: bytes, directory: Path | None = None) -> Path:
    path = (directory or self.directory) / filename
    path.write_bytes(gzip.compress(content))
    return path


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tiny:
  rng = np.random.default_rng(0)
  arrays = (
    rng.integers(0, 256, (NUM_TINY_TRAIN, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, NUM_TINY_TRAIN, dtype=np.uint8),
    rng.integers(0, 256, (NUM_TINY_TEST, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, NUM_TINY_TEST, dtype=np.uint8),
  )
  contents = dict(
    zip(
      FILENAMES,
      (
        _images_idx(arrays[0]),
        _labels_idx(arrays[1]),
        _images_idx(arrays[2]),
        _labels_idx(arrays[3]),
      ),
      strict=True,
    )
  )
  spec = data.DatasetSpec(
    name='tiny',
    filenames=FILENAMES,
    sha256=tuple(hashlib.sha256(contents[name]).hexdigest() for name in FILENAMES),
    num_train=NUM_TINY_TRAIN,
    num_test=NUM_TINY_TEST,
    url='http://127.0.0.1:9/',  # The discard port: never meant to be reached.
  )
  monkeypatch.setitem(data.DATASETS, 'tiny', spec)
  result = Tiny(tmp_path / 'tiny', contents, *arrays)
  result.directory.mkdir()
  for name, content in contents.items():
    result.write(name, content)
  return result


def _load_tiny(tiny: Tiny, **kwargs) -> data.Dataset:
  kwargs.setdefault('data_dir', str(tiny.directory))
  return data.load_dataset('tiny', num_val=2, **kwargs)


# The vendored MNIST.


@pytest.fixture(scope='module')
def vendored_mnist() -> data.Dataset:
  return data.load_dataset('mnist')


def test_mnist_shapes_dtypes_and_labels(vendored_mnist: data.Dataset) -> None:
  assert vendored_mnist.train_images.shape == (55_000, 784)
  assert vendored_mnist.val_images.shape == (5_000, 784)
  assert vendored_mnist.test_images.shape == (10_000, 784)
  assert vendored_mnist.train_labels.shape == (55_000,)
  assert vendored_mnist.val_labels.shape == (5_000,)
  assert vendored_mnist.test_labels.shape == (10_000,)
  for images in (
    vendored_mnist.train_images,
    vendored_mnist.val_images,
    vendored_mnist.test_images,
  ):
    assert images.dtype == np.uint8
  for labels in (
    vendored_mnist.train_labels,
    vendored_mnist.val_labels,
    vendored_mnist.test_labels,
  ):
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == set(range(10))
  assert vendored_mnist.num_classes == 10
  assert vendored_mnist.image_shape == (28, 28)


def test_mnist_splits_follow_the_official_files(vendored_mnist: data.Dataset) -> None:
  train_images = _raw_idx(MNIST_DIR / TRAIN_IMAGES, 16).reshape(60_000, 784)
  train_labels = _raw_idx(MNIST_DIR / TRAIN_LABELS, 8)
  np.testing.assert_array_equal(vendored_mnist.train_images, train_images[:55_000])
  np.testing.assert_array_equal(vendored_mnist.val_images, train_images[55_000:])
  np.testing.assert_array_equal(vendored_mnist.train_labels, train_labels[:55_000])
  np.testing.assert_array_equal(vendored_mnist.val_labels, train_labels[55_000:])
  np.testing.assert_array_equal(
    vendored_mnist.test_images,
    _raw_idx(MNIST_DIR / TEST_IMAGES, 16).reshape(10_000, 784),
  )
  np.testing.assert_array_equal(
    vendored_mnist.test_labels, _raw_idx(MNIST_DIR / TEST_LABELS, 8)
  )


@pytest.mark.parametrize('num_val', [1, 10_000, 59_999])
def test_mnist_num_val(vendored_mnist: data.Dataset, num_val: int) -> None:
  dataset = data.load_dataset('mnist', num_val=num_val)
  assert dataset.train_images.shape == (60_000 - num_val, 784)
  assert dataset.val_images.shape == (num_val, 784)
  assert dataset.val_labels.shape == (num_val,)
  np.testing.assert_array_equal(dataset.val_images[-1], vendored_mnist.val_images[-1])
  np.testing.assert_array_equal(dataset.train_images[0], vendored_mnist.train_images[0])


@pytest.mark.parametrize('num_val', [0, -1, 60_000, 70_000, 2.5, True, '5000'])
def test_bad_num_val(num_val: object) -> None:
  with pytest.raises(UserError, match='num_val'):
    data.load_dataset('mnist', num_val=num_val)


def test_unknown_dataset_lists_known_ones() -> None:
  with pytest.raises(UserError, match=r"unknown dataset 'cifar'.*fashion_mnist, mnist"):
    data.load_dataset('cifar')


def test_unknown_source() -> None:
  with pytest.raises(UserError, match=r"unknown data source 'csv'.*idx, tfds"):
    data.load_dataset('mnist', source='csv')


def test_missing_data_dir_is_named(tmp_path: Path) -> None:
  missing = tmp_path / 'nowhere'
  with pytest.raises(
    UserError, match=re.escape(f'data directory {missing} does not exist')
  ):
    data.load_dataset('mnist', data_dir=str(missing))


def test_scale_images() -> None:
  scaled = data.scale_images(jnp.array([[0, 51, 255]], dtype=jnp.uint8))
  assert scaled.dtype == jnp.float32
  np.testing.assert_allclose(scaled, [[0.0, 0.2, 1.0]], rtol=1e-6)


@pytest.mark.skipif(
  not all((FASHION_DIR / name).is_file() for name in FILENAMES),
  reason=f'Fashion-MNIST not in {FASHION_DIR} (apt-get install dataset-fashion-mnist)',
)
def test_fashion_mnist_from_debian_package(
  tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  # An empty repo data folder: the files must come from the package's folder.
  monkeypatch.setattr(data, '_REPO_DATA_DIR', tmp_path)
  dataset = data.load_dataset('fashion_mnist')
  assert dataset.train_images.shape == (55_000, 784)
  assert dataset.test_images.shape == (10_000, 784)
  assert np.bincount(dataset.test_labels).tolist() == [1000] * 10


# Synthetic files: good ones load, each kind of damage is refused.


def test_tiny_loads(tiny: Tiny) -> None:
  dataset = _load_tiny(tiny)
  np.testing.assert_array_equal(
    dataset.train_images, tiny.train_images[:10].reshape(10, 784)
  )
  np.testing.assert_array_equal(
    dataset.val_images, tiny.train_images[10:].reshape(2, 784)
  )
  np.testing.assert_array_equal(dataset.val_labels, tiny.train_labels[10:])
  np.testing.assert_array_equal(dataset.test_labels, tiny.test_labels)


def test_any_gzip_of_the_genuine_content_passes(tiny: Tiny) -> None:
  content = tiny.contents[TRAIN_IMAGES]
  (tiny.directory / TRAIN_IMAGES).write_bytes(gzip.compress(content, 1, mtime=123))
  _load_tiny(tiny)


# (file to damage, damaged gzip file bytes or IDX content, expected message part)
_DAMAGE: dict[str, tuple[str, Callable[[Tiny], bytes], str]] = {
  'truncated_gzip': (
    TRAIN_IMAGES,
    lambda t: gzip.compress(t.contents[TRAIN_IMAGES])[:-100],
    'is truncated: its gzip stream ends after',
  ),
  'not_gzip': (
    TRAIN_LABELS,
    lambda t: b'<html>Not Found</html>',
    'is not a valid gzip file',
  ),
  'bad_gzip_crc': (
    TEST_LABELS,
    lambda t: gzip.compress(t.contents[TEST_LABELS])[:-8] + bytes(8),
    'is not a valid gzip file',
  ),
  'empty': (TEST_IMAGES, lambda t: gzip.compress(b''), 'is truncated: 0 bytes'),
  'labels_in_images_file': (
    TRAIN_IMAGES,
    lambda t: gzip.compress(t.contents[TRAIN_LABELS]),
    'has magic number 0x00000801, not 0x00000803: it is an IDX labels file',
  ),
  'wrong_magic': (
    TEST_LABELS,
    lambda t: gzip.compress(b'\x00\x00\x08\x02' + t.contents[TEST_LABELS][4:]),
    'has magic number 0x00000802, not 0x00000801: it is not an IDX labels file',
  ),
  'wrong_dims': (
    TRAIN_IMAGES,
    lambda t: gzip.compress(_images_idx(t.train_images[:, :27, :])),
    'holds 27x28 images, expected 28x28',
  ),
  'header_count_above_payload': (
    TRAIN_IMAGES,
    lambda t: gzip.compress(_images_idx(t.train_images[:11], count=12)),
    'is truncated: its header declares 12 images (9424 bytes) but it holds 8640',
  ),
  'header_count_below_payload': (
    TRAIN_LABELS,
    lambda t: gzip.compress(_labels_idx(t.train_labels, count=11)),
    'is inconsistent: its header declares 11 labels',
  ),
  'more_than_genuine': (
    TEST_IMAGES,
    lambda t: gzip.compress(_images_idx(t.train_images)),
    'holds more than the 3152 bytes of IDX content of a genuine file',
  ),
  'label_out_of_range': (
    TEST_LABELS,
    lambda t: gzip.compress(_labels_idx(np.array([1, 2, 10, 3]))),
    'holds label 10 at index 2, outside 0..9',
  ),
  'checksum': (
    TRAIN_IMAGES,
    lambda t: gzip.compress(_images_idx(255 - t.train_images)),
    'has the wrong content: the sha256 of its uncompressed IDX data is',
  ),
}


@pytest.mark.parametrize('damage', list(_DAMAGE))
def test_damaged_file_is_refused_and_named(tiny: Tiny, damage: str) -> None:
  filename, make_bytes, message = _DAMAGE[damage]
  path = tiny.directory / filename
  path.write_bytes(make_bytes(tiny))
  with pytest.raises(UserError) as error:
    _load_tiny(tiny)
  text = str(error.value)
  assert text.startswith(f'data file {path} {message}'), text
  assert text.endswith(f'or copy a genuine copy into {tiny.directory}'), text
  assert '\n' not in text


def test_image_and_label_counts_disagree(tiny: Tiny) -> None:
  # Both files are well formed, the labels file just has one label fewer.
  labels = tiny.write(TRAIN_LABELS, _labels_idx(tiny.train_labels[:11]))
  with pytest.raises(UserError, match='disagree') as error:
    _load_tiny(tiny)
  text = str(error.value)
  assert f'{tiny.directory / TRAIN_IMAGES} (12 images) and {labels} (11 labels)' in text
  assert f'delete {labels} to re-download' in text


def test_wrong_count_in_both_files(tiny: Tiny) -> None:
  tiny.write(TEST_IMAGES, _images_idx(tiny.test_images[:3]))
  tiny.write(TEST_LABELS, _labels_idx(tiny.test_labels[:3]))
  with pytest.raises(
    UserError,
    match=re.escape(f'{tiny.directory / TEST_IMAGES} holds 3 images, expected 4'),
  ):
    _load_tiny(tiny)


# Downloads, from a local HTTP server only.


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, format: str, *args: object) -> None:  # noqa: A002
    pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
  """An HTTP server on 127.0.0.1 serving a folder: (folder, base URL)."""
  root = tmp_path / 'mirror'
  root.mkdir()
  handler = functools.partial(_QuietHandler, directory=str(root))
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  yield root, f'http://127.0.0.1:{server.server_address[1]}/'
  server.shutdown()
  server.server_close()
  thread.join()


def test_downloads_absent_files(
  tiny: Tiny, mirror: tuple[Path, str], tmp_path: Path
) -> None:
  root, url = mirror
  for name, content in tiny.contents.items():
    tiny.write(name, content, directory=root)
  cache = tmp_path / 'cache'
  cache.mkdir()
  tiny.write(
    TEST_LABELS, tiny.contents[TEST_LABELS], directory=cache
  )  # Present already.
  dataset = _load_tiny(tiny, data_dir=str(cache), download_url=url.rstrip('/'))
  np.testing.assert_array_equal(dataset.test_images, tiny.test_images.reshape(4, 784))
  assert sorted(os.listdir(cache)) == sorted(FILENAMES)  # No temporary files left.
  _load_tiny(tiny, data_dir=str(cache), download_url='http://127.0.0.1:9/')  # Cached.


def test_downloads_into_default_dir(
  tiny: Tiny, mirror: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  root, url = mirror
  for name, content in tiny.contents.items():
    tiny.write(name, content, directory=root)
  monkeypatch.setattr(data, '_REPO_DATA_DIR', tmp_path / 'repo_data')
  _load_tiny(tiny, data_dir='', download_url=url)
  assert sorted(os.listdir(tmp_path / 'repo_data' / 'tiny')) == sorted(FILENAMES)


def test_bad_download_is_refused_and_not_kept(
  tiny: Tiny, mirror: tuple[Path, str], tmp_path: Path
) -> None:
  root, url = mirror
  for name, content in tiny.contents.items():
    tiny.write(name, content, directory=root)
  tiny.write(TRAIN_LABELS, _labels_idx(9 - tiny.train_labels), directory=root)
  cache = tmp_path / 'cache'
  cache.mkdir()
  with pytest.raises(UserError) as error:
    _load_tiny(tiny, data_dir=str(cache), download_url=url)
  text = str(error.value)
  assert text.startswith(f'downloaded {url}{TRAIN_LABELS} has the wrong content'), text
  assert f'{cache / TRAIN_LABELS} was not written' in text
  assert TRAIN_LABELS not in os.listdir(cache)
  assert not [name for name in os.listdir(cache) if name.endswith('.part')]


def test_download_404(tiny: Tiny, mirror: tuple[Path, str], tmp_path: Path) -> None:
  _, url = mirror
  cache = tmp_path / 'cache'
  cache.mkdir()
  with pytest.raises(UserError, match='HTTP 404') as error:
    _load_tiny(tiny, data_dir=str(cache), download_url=url)
  assert f'{url}{TRAIN_IMAGES}' in str(error.value)
  assert os.listdir(cache) == []


def test_download_server_down(tiny: Tiny, tmp_path: Path) -> None:
  with socket.socket() as probe:  # A port that nothing listens on.
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
  url = f'http://127.0.0.1:{port}/'
  cache = tmp_path / 'cache'
  cache.mkdir()
  with pytest.raises(UserError) as error:
    _load_tiny(tiny, data_dir=str(cache), download_url=url)
  text = str(error.value)
  assert text.startswith(
    f'data file {cache / TRAIN_IMAGES} is missing and downloading it from'
    f' {url}{TRAIN_IMAGES} failed'
  ), text
  assert f'copy {TRAIN_IMAGES} into {cache} by hand' in text
  assert os.listdir(cache) == []


def test_download_url_must_be_http(tiny: Tiny) -> None:
  with pytest.raises(UserError, match="data_url='ftp://example.org/' is not an http"):
    _load_tiny(tiny, download_url='ftp://example.org/')


def test_fetch_refuses_oversized_download(
  mirror: tuple[Path, str], tmp_path: Path
) -> None:
  root, url = mirror
  (root / 'big').write_bytes(bytes(5000))
  with pytest.raises(UserError, match='is larger than 1000 bytes'):
    download.fetch(url + 'big', tmp_path / 'big', lambda path: None, max_bytes=1000)
  assert os.listdir(tmp_path) == ['mirror']


# TFDS, from the prepared copy in shared/.

requires_tfds_copy = pytest.mark.skipif(
  not (TFDS_DIR / 'mnist').is_dir(), reason=f'no prepared TFDS MNIST in {TFDS_DIR}'
)


@pytest.fixture(scope='module')
def mnist_tfds() -> data.Dataset:
  return data.load_dataset('mnist', source='tfds', data_dir=str(TFDS_DIR))


@requires_tfds_copy
def test_tfds_matches_idx(
  mnist_tfds: data.Dataset, vendored_mnist: data.Dataset
) -> None:
  assert mnist_tfds.train_images.shape == (55_000, 784)
  assert mnist_tfds.val_images.shape == (5_000, 784)
  assert mnist_tfds.test_images.shape == (10_000, 784)
  assert mnist_tfds.test_labels.shape == (10_000,)
  assert mnist_tfds.train_images.dtype == np.uint8
  assert mnist_tfds.test_labels.dtype == np.int32
  np.testing.assert_array_equal(
    np.bincount(mnist_tfds.test_labels, minlength=10),
    np.bincount(vendored_mnist.test_labels, minlength=10),
  )
  np.testing.assert_array_equal(
    np.bincount(np.concatenate([mnist_tfds.train_labels, mnist_tfds.val_labels])),
    np.bincount(
      np.concatenate([vendored_mnist.train_labels, vendored_mnist.val_labels])
    ),
  )
  # Same pixels in another order: the sums over all test images agree.
  assert mnist_tfds.test_images.sum(dtype=np.int64) == vendored_mnist.test_images.sum(
    dtype=np.int64
  )


def test_tfds_absent_data_is_a_user_error(tmp_path: Path) -> None:
  with pytest.raises(UserError, match=re.escape(f'{tmp_path} holds no prepared mnist')):
    data.load_dataset('mnist', source='tfds', data_dir=str(tmp_path))


def test_tfds_unprepared_dataset_is_a_user_error(tmp_path: Path) -> None:
  pytest.importorskip('tensorflow_datasets')
  (tmp_path / 'mnist' / '3.0.1').mkdir(parents=True)  # A folder, but no records.
  with pytest.raises(UserError, match=re.escape(f'TFDS dataset mnist in {tmp_path}')):
    data.load_dataset('mnist', source='tfds', data_dir=str(tmp_path))


def test_tfds_missing_dir(tmp_path: Path) -> None:
  with pytest.raises(UserError, match='TFDS data directory .* does not exist'):
    data.load_dataset('mnist', source='tfds', data_dir=str(tmp_path / 'nowhere'))
