"""Files in the workdir, each written atomically (temporary file, then rename).

A reader never sees a half-written `summary.json` or `params.npz`: the bytes go
to a temporary file in the same directory, are flushed to disk, and replace the
target with `os.replace`, which is atomic on POSIX.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from mlp.errors import UserError


def prepare(workdir: str | os.PathLike) -> Path:
  """Creates `workdir` if needed; a clear error when it cannot be written."""
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise UserError(
      f'workdir {path} is a file, not a directory: pass another --workdir'
    )
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(
      f'cannot create workdir {path}: {e.strerror}; pass another --workdir'
    ) from None
  if not os.access(path, os.W_OK):
    raise UserError(f'workdir {path} is not writable: pass another --workdir')
  return path


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'w'):
  """Opens a temporary sibling of `path`; renames it over `path` on success."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from others
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def write_json(path: str | os.PathLike, obj) -> None:
  """Writes `obj` as indented JSON, atomically."""
  with atomic_open(path) as f:
    json.dump(obj, f, indent=2, sort_keys=False)
    f.write('\n')


def append_jsonl(path: str | os.PathLike, obj) -> None:
  """Appends one JSON object as a line (a line is written with one call)."""
  with open(path, 'a') as f:
    f.write(json.dumps(obj) + '\n')


def save_params(path: str | os.PathLike, params: dict) -> None:
  """Saves a flat dict of arrays as `.npz`, atomically."""
  with atomic_open(path, 'wb') as f:
    np.savez(f, **{k: np.asarray(v) for k, v in params.items()})


PARAMS_FILES = ('params.npz', 'best_params.npz')


def params_path(workdir: Path) -> Path:
  """`params.npz` of a train workdir, else `best_params.npz` of a sweep workdir."""
  for name in PARAMS_FILES:
    if (workdir / name).is_file():
      return workdir / name
  return workdir / PARAMS_FILES[0]  # load_params explains what is missing


def load_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads `params.npz`; a clear error when it is missing or unreadable."""
  path = Path(path)
  if not path.is_file():
    raise UserError(
      f'no saved params at {path}: train first with --mode=train (or --mode=sweep) '
      f'--workdir={path.parent}'
    )
  try:
    with np.load(path) as npz:
      return {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e:
    raise UserError(
      f'cannot read saved params {path} ({e}); train again with --mode=train'
    ) from None


def read_json(path: str | os.PathLike):
  """Reads a JSON file written by this package."""
  with open(path) as f:
    return json.load(f)
