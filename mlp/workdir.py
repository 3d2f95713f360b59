"""The workdir: claimed by one run at a time, its files written atomically.

A reader never sees a half-written `summary.json` or `params.npz`: the bytes go
to a temporary file in the same directory, are flushed to disk, and replace the
target with `os.replace`, which is atomic on POSIX. A failed write (a full
disk) raises `WriteError`, which names the file, and leaves the old file as it
was.

A run that writes (train, sweep) first claims the workdir (`claim`): an OS
lock (`flock`) on `WORKDIR/.lock`, which the kernel releases when the process
ends, however it ends, so a killed run never leaves a stale lock. A second run
on a claimed workdir is refused with the holder's process, host and start
time. Readers (eval, predict) take no lock.

For tests of a full disk where no small filesystem can be mounted, the
environment variable `MLP_FAIL_WRITE=GLOB` makes every atomic write to a file
whose name matches `GLOB` fail with `ENOSPC`.
"""

import contextlib
import datetime
import errno
import fcntl
import fnmatch
import json
import os
import socket
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mlp.errors import UserError

LOCK_FILE = '.lock'


class WriteError(UserError):
  """A workdir file could not be written (the disk is full, or read-only)."""

  def __init__(self, path: Path, error: OSError):
    super().__init__(f'cannot write {path}: {error.strerror or error}')
    self.path, self.errno = path, error.errno


def existing(workdir: str | os.PathLike, fix: str) -> Path:
  """`workdir` as a `Path`, when it is a directory a run wrote into.

  Args:
    workdir: the `--workdir` of eval, predict or the plots.
    fix: what to do when it does not exist, e.g. 'train first with ...'.

  Raises:
    UserError: when `workdir` is a file, or does not exist.
  """
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise UserError(
      f'workdir {path} is a file, not a directory: pass the directory of a train '
      'or sweep run as --workdir'
    )
  if not path.is_dir():
    raise UserError(f'workdir {path} does not exist: {fix}')
  return path


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


_claimed: dict[Path, int] = {}


@contextlib.contextmanager
def claim(workdir: Path):
  """Holds `workdir` for one run; removes temporary files a killed run left.

  Args:
    workdir: an existing directory.

  Raises:
    UserError: when another process holds the workdir, or it cannot be locked.
  """
  key = workdir.resolve()
  if key in _claimed:  # a run inside a run of this process
    yield
    return
  try:
    fd = _take_lock(workdir)
  except OSError as e:
    raise UserError(
      f'cannot lock workdir {workdir} ({e.strerror or e}): its filesystem may not '
      f'support locks, or {workdir / LOCK_FILE} is not a file; pass another --workdir'
    ) from None
  _claimed[key] = fd
  try:
    _remove_temporary(workdir)
    yield
  finally:
    del _claimed[key]
    os.close(fd)  # releases the run lock


def _take_lock(workdir: Path) -> int:
  """Locks `WORKDIR/.lock` and writes who holds it; its descriptor."""
  directory = os.open(workdir, os.O_RDONLY)
  try:
    # The directory's own lock guards the moment of taking the run lock and
    # writing who holds it, so a refused run always reads a complete holder.
    fcntl.flock(directory, fcntl.LOCK_EX)
    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder_info = os.pread(fd, 4096, 0).decode(errors='replace')
      os.close(fd)
      raise UserError(
        f'workdir {workdir} is in use by {_describe(holder_info)}'
      ) from None
    started = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
    info = json.dumps(
      {'pid': os.getpid(), 'host': socket.gethostname(), 'since': started}
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    return fd
  finally:
    os.close(directory)  # closing releases the guard


def _describe(holder_info: str) -> str:
  try:
    info = json.loads(holder_info)
    return f'process {info["pid"]} on {info["host"]} since {info["since"]}'
  except (ValueError, KeyError, TypeError):
    return 'another process'


def _remove_temporary(workdir: Path) -> None:
  """Deletes the temporary files of writes that a kill interrupted."""
  for folder in (workdir, *(p for p in workdir.iterdir() if p.is_dir())):
    for tmp in folder.glob('.*.tmp'):
      tmp.unlink(missing_ok=True)


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'w'):
  """Opens a temporary sibling of `path`; renames it over `path` on success."""
  path = Path(path)
  try:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  except OSError as e:
    raise WriteError(path, e) from None
  os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from others
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      _injected_failure(path)
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    if isinstance(e, OSError):
      raise WriteError(path, e) from None
    raise


def _injected_failure(path: Path) -> None:
  pattern = os.environ.get('MLP_FAIL_WRITE')
  if pattern and fnmatch.fnmatch(path.name, pattern):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def write_json(path: str | os.PathLike, obj) -> None:
  """Writes `obj` as indented JSON, atomically."""
  with atomic_open(path) as f:
    json.dump(obj, f, indent=2, sort_keys=False)
    f.write('\n')


def append_jsonl(path: str | os.PathLike, obj) -> None:
  """Appends one JSON object as a line (a line is written with one call)."""
  try:
    with open(path, 'a') as f:
      f.write(json.dumps(obj) + '\n')
  except OSError as e:  # a line cut short is dropped when the run resumes
    raise WriteError(Path(path), e) from None


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
    with np.load(path, allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise UserError(
      f'cannot read saved params {path} (damaged: {type(e).__name__}: {e}); '
      'train again with --mode=train'
    ) from None


def read_json(path: str | os.PathLike, fix: str = 'delete it') -> dict:
  """Reads a JSON object written by this package; `fix` ends the error if damaged."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f'cannot read {path} (damaged: {e}): {fix}') from None
  if not isinstance(value, dict):
    raise UserError(
      f'cannot read {path} (damaged: a JSON {type(value).__name__}, not an object): '
      f'{fix}'
    )
  return value
