"""Fetch one file over HTTP(S) into a directory, verified before it becomes visible.

The bytes go to a temporary file in the destination directory; a caller-supplied
`verify` function checks that file, and only then is it renamed into place with
`os.replace`, which is atomic on one file system. A reader therefore never sees a
half-written or unverified file, and a refused download leaves nothing behind.
"""

import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from absl import logging

from mlp.errors import UserError

T = TypeVar('T')

_CHUNK_BYTES = 1 << 20


class BadContentError(Exception):
  """Raised by a `verify` function: the file is not the expected one.

  Its message completes a sentence that starts with the file's name, e.g.
  'is truncated: ...', so callers can prefix the name of the file it concerns.
  """


def fetch(
  url: str,
  destination: Path,
  verify: Callable[[Path], T],
  max_bytes: int,
  timeout_s: float = 60.0,
) -> T:
  """Downloads `url` to `destination` if `verify` accepts what arrived.

  Args:
    url: http(s) URL of the file.
    destination: where the file must end up; its directory is created if needed.
    verify: called with the path of the downloaded temporary file; returns a value
      (e.g. the parsed contents) or raises `BadContentError`.
    max_bytes: the download is refused once it exceeds this many bytes.
    timeout_s: socket timeout for connecting and for each read.

  Returns:
    What `verify` returned.

  Raises:
    UserError: the download failed, or `verify` refused the file (which is then
      deleted, so `destination` is not written).
  """
  directory = destination.parent
  by_hand = f'copy {destination.name} into {directory} by hand'
  try:
    directory.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
      dir=directory, prefix=f'.{destination.name}.', suffix='.part'
    )
  except OSError as e:
    raise UserError(
      f'data file {destination} is missing and cannot be downloaded: cannot'
      f' write into {directory} ({e.strerror or e}); {by_hand}'
    ) from None
  temp_path = Path(temp_name)
  try:
    logging.info('Downloading %s to %s', url, destination)
    start = time.perf_counter()
    with os.fdopen(handle, 'wb') as out:
      num_bytes = _copy_response(url, out, max_bytes, destination, by_hand, timeout_s)
    try:
      result = verify(temp_path)
    except BadContentError as e:
      raise UserError(
        f'downloaded {url} {e}; it was deleted and {destination} was not'
        f' written; check that --config.data_url points at a genuine mirror, or'
        f' {by_hand}'
      ) from None
    os.chmod(temp_path, 0o644)  # mkstemp makes it private to its owner.
    os.replace(temp_path, destination)
    logging.info(
      'Downloaded %s (%d bytes) in %.1f s',
      destination,
      num_bytes,
      time.perf_counter() - start,
    )
    return result
  finally:
    temp_path.unlink(missing_ok=True)


def _copy_response(
  url: str,
  out: BinaryIO,
  max_bytes: int,
  destination: Path,
  by_hand: str,
  timeout_s: float,
) -> int:
  """Streams the body of `url` into the open file `out`; returns its length."""

  def network_error(reason: object) -> UserError:
    reason = ' '.join(str(reason).split())
    return UserError(
      f'data file {destination} is missing and downloading it from {url} failed'
      f' ({reason}); {by_hand}, or set --config.data_url to a reachable mirror'
    )

  num_bytes = 0
  try:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
      while chunk := response.read(_CHUNK_BYTES):
        num_bytes += len(chunk)
        if num_bytes > max_bytes:
          raise UserError(
            f'downloaded {url} is larger than {max_bytes} bytes, more than any'
            f' genuine copy; it was deleted and {destination} was not written;'
            f' check that --config.data_url points at a genuine mirror, or {by_hand}'
          )
        try:
          out.write(chunk)
        except OSError as e:
          raise UserError(
            f'cannot write {destination} while downloading it from {url}'
            f' ({e.strerror or e}); free space in {destination.parent}, or'
            f' {by_hand}'
          ) from None
  except urllib.error.HTTPError as e:
    raise network_error(f'HTTP {e.code} {e.reason}') from None
  except urllib.error.URLError as e:
    raise network_error(e.reason) from None
  except (OSError, http.client.HTTPException, ValueError) as e:
    # OSError: timeouts and dropped connections; ValueError: a malformed URL.
    raise network_error(f'{type(e).__name__}: {e}') from None
  return num_bytes
