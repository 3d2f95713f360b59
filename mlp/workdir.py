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

The workdir's manifest, `WORKDIR/.manifest`, names every file this tool wrote
there (one path a line, relative to the workdir), each recorded before the
file is created. A run that starts over (`--restart`, or no checkpoint to
resume) deletes exactly those files, of whatever kind of run wrote them, and
nothing else in the directory; a run refuses to overwrite a file it would
write that the manifest does not name (`foreign`).

Every JSON file is strict JSON: a NaN or an infinity is written as `null`,
and the object it belongs to gains `"non_finite": {"PATH": "nan"}` (PATH the
key's dotted path); `read_json` and `loads_json` turn them back.

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
import math
import os
import socket
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mlp.errors import UserError

LOCK_FILE = '.lock'
MANIFEST = '.manifest'
NON_FINITE = 'non_finite'


class WriteError(UserError):
  """A workdir file could not be written (the disk is full, or read-only)."""

  def __init__(self, path: Path, error: OSError):
    super().__init__(f'cannot write {path}: {error.strerror or error}')
    self.path, self.errno = path, error.errno


def check_name(workdir: str | os.PathLike) -> Path:
  """`workdir` as a path; refuses an empty or blank one, which would mean the
  current directory and whatever it holds."""
  if not str(workdir).strip():
    raise UserError(
      f'--workdir={str(workdir)!r} is empty: pass a directory for the run, e.g. '
      '--workdir=runs/NAME'
    )
  return Path(workdir)


def existing(workdir: str | os.PathLike, fix: str) -> Path:
  """`workdir` as a `Path`, when it is a directory a run wrote into.

  Args:
    workdir: the `--workdir` of eval, predict or the plots.
    fix: what to do when it does not exist, e.g. 'train first with ...'.

  Raises:
    UserError: when `workdir` is empty, a file, or does not exist.
  """
  path = check_name(workdir)
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
  path = check_name(workdir)
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
_written: dict[Path, set[str]] = {}  # each claimed workdir's manifest


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
  _written[key] = set(written(workdir))
  try:
    _remove_temporary(workdir)
    yield
  finally:
    del _claimed[key], _written[key]
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


def written(workdir: Path) -> list[str]:
  """The files the manifest of `workdir` names, relative to it, in order."""
  try:
    text = (workdir / MANIFEST).read_text(errors='replace')
  except FileNotFoundError:
    return []
  except OSError as e:
    raise UserError(f'cannot read {workdir / MANIFEST}: {e.strerror}') from None
  lines = text.split('\n')[:-1]  # a line a kill cut short has no newline
  return list(dict.fromkeys(line for line in lines if line))


def note_written(path: str | os.PathLike) -> None:
  """Records `path` in the manifest of the claimed workdir that holds it
  (before the file is created, so that a kill leaves no unnamed file)."""
  path = Path(path)
  path = path.parent.resolve() / path.name
  for key, names in _written.items():
    if path.parent == key or key in path.parents:
      name = str(path.relative_to(key))
      if name not in names:
        try:
          with open(key / MANIFEST, 'a') as f:
            f.write(name + '\n')
        except OSError as e:
          raise WriteError(key / MANIFEST, e) from None
        names.add(name)
      return


def foreign(workdir: Path, names: Iterable[str]) -> list[str]:
  """Those of `names` that exist in `workdir` but that its manifest does not name."""
  ours = set(written(workdir))
  return [n for n in names if (workdir / n).exists() and n not in ours]


def remove_written(workdir: Path) -> None:
  """Deletes every file the manifest of `workdir` names, and the folders they
  leave empty; nothing else in the directory."""
  folders = set()
  try:
    for name in written(workdir):
      path = workdir / name
      if path.is_file() or path.is_symlink():
        path.unlink()
      folders.update(p for p in path.parents if workdir in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
      with contextlib.suppress(OSError):  # not empty: it holds other files
        folder.rmdir()
    with open(workdir / MANIFEST, 'w'):
      pass
  except OSError as e:
    raise UserError(
      f'cannot delete the outputs in {workdir} ({e.strerror or e}): delete them by '
      'hand, or pass another --workdir'
    ) from None
  key = workdir.resolve()
  if key in _written:
    _written[key].clear()


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'w'):
  """Opens a temporary sibling of `path`; renames it over `path` on success."""
  path = Path(path)
  note_written(path)
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


def _finite(value, path: str, found: dict[str, str]):
  if isinstance(value, float) and not math.isfinite(value):
    found.setdefault(path, str(value))  # 'nan', 'inf' or '-inf'
    return None
  if isinstance(value, dict):
    return {
      k: _finite(v, f'{path}.{k}' if path else str(k), found) for k, v in value.items()
    }
  if isinstance(value, list | tuple):
    return [_finite(v, path, found) for v in value]
  return value


def finite_json(obj):
  """`obj` with each NaN or infinity as `None`, flagged (see the module's doc).

  Args:
    obj: a JSON-able value; a list's objects are flagged one by one.

  Returns:
    The same structure, whose dicts with a non-finite number below them
    (the top-level one, or each of a top-level list) gain `non_finite`.
  """
  if isinstance(obj, list):
    return [finite_json(item) for item in obj]
  found: dict[str, str] = {}
  clean = _finite(obj, '', found)
  if found and isinstance(clean, dict):
    clean[NON_FINITE] = found
  return clean


def dumps_json(obj, **kwargs) -> str:
  """Strict JSON text of `obj` (`json.dumps` arguments allowed): no NaN, no
  Infinity (see `finite_json`)."""
  return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def _restore(value, parts: list[str], number: float):
  if value is None and not parts:
    return number
  if isinstance(value, list):
    return [_restore(v, parts, number) for v in value]
  if isinstance(value, dict) and parts and parts[0] in value:
    value[parts[0]] = _restore(value[parts[0]], parts[1:], number)
  return value


def restore_non_finite(obj):
  """The inverse of `finite_json`: flagged `None`s become NaN or infinity again."""
  if isinstance(obj, list):
    return [restore_non_finite(item) for item in obj]
  if isinstance(obj, dict) and isinstance(obj.get(NON_FINITE), dict):
    for path, kind in obj.pop(NON_FINITE).items():
      _restore(obj, path.split('.'), float(kind))
  return obj


def loads_json(text: str):
  """Reads JSON text written by `dumps_json`, NaN and infinities restored."""
  return restore_non_finite(json.loads(text))


def write_json(path: str | os.PathLike, obj) -> None:
  """Writes `obj` as indented strict JSON (see `dumps_json`), atomically."""
  with atomic_open(path) as f:
    f.write(dumps_json(obj, indent=2) + '\n')


def append_jsonl(path: str | os.PathLike, obj) -> None:
  """Appends one JSON object as a line (a line is written with one call)."""
  note_written(path)
  try:
    with open(path, 'a') as f:
      f.write(dumps_json(obj) + '\n')
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


def load_finite_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """`load_params`, refusing params with a NaN or an infinity: a model for
  eval or predict, whose every answer would be meaningless."""
  params = load_params(path)
  bad = [k for k, v in params.items() if not np.all(np.isfinite(v))]
  if bad:
    raise UserError(
      f'the params in {path} are not finite ({", ".join(sorted(bad))} '
      f'{"hold" if len(bad) > 1 else "holds"} NaN or '
      'infinity): the run that wrote them diverged; train again with --restart and '
      'smaller values (its summary.json and its log name the field to lower)'
    )
  return params


def read_json(path: str | os.PathLike, fix: str = 'delete it') -> dict:
  """Reads a JSON object written by this package; `fix` ends the error if damaged."""
  try:
    with open(path) as f:
      value = loads_json(f.read())
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise UserError(f'cannot read {path} (damaged: {e}): {fix}') from None
  if not isinstance(value, dict):
    raise UserError(
      f'cannot read {path} (damaged: a JSON {type(value).__name__}, not an object): '
      f'{fix}'
    )
  return value
