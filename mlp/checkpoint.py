"""Checkpoints: a training state saved atomically, checked, found again, resumed.

A checkpoint is one `.npz` in `WORKDIR/checkpoints/` named by a sequence number
that grows with every save (`ckpt_000000007.npz`). It holds every leaf of the
job's state (keyed `state/<path>`), arrays that finished jobs left
(`kept/<name>`), a JSON string of metadata that includes the run's full config,
and a SHA-256 checksum of all of that. Files are written to a temporary name
and renamed, so a run killed at any moment leaves either the previous
checkpoint or the new one, never half of one. The last `keep` are kept. This
module alone knows how the files are named and laid out.

A run resumes from the newest checkpoint that is intact: a damaged one (cut
short, a flipped byte, random bytes) is set aside with a warning that names
it, and the one before it is used. Whether a checkpoint may be resumed is
decided by the config stored inside it, so an edited or deleted `config.json`
cannot let another config resume.

For tests, the environment variable `MLP_KILL_AFTER_CHECKPOINT=N` makes the
process kill itself (SIGKILL) right after writing its N-th checkpoint: a kill
at a known point, with no race. `MLP_STOP_AFTER_CHECKPOINT=N` stops it there
instead (SIGSTOP, still holding its workdir), for a test to act on a run in
progress (`os.waitpid(pid, os.WUNTRACED)` returns once it has stopped) and
then let it go on (SIGCONT).
"""

import hashlib
import json
import os
import re
import signal
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from absl import logging

from mlp import distributed
from mlp import workdir as workdir_lib
from mlp.errors import UserError

DIRNAME = 'checkpoints'
FORMAT = 2  # the layout described above; older checkpoints are refused
# Config fields that may change between a run and its resumption.
RESUMABLE_FIELDS = frozenset(
  {'data_dir', 'data_url', 'checkpoint_every', 'keep_checkpoints', 'write_plots'}
)
_NAME = re.compile(r'^ckpt_(\d{9})\.npz$')
_NUMBERED = re.compile(r'^ckpt_(\d{9})\.npz')  # also `.damaged` ones
_METADATA, _CHECKSUM = '__metadata__', '__checksum__'


class Damaged(Exception):
  """A checkpoint file that cannot be read back as it was written."""


class Contents(NamedTuple):
  """What one checkpoint holds, checked against its checksum."""

  state: dict[str, np.ndarray]  # the job's state, by leaf path
  kept: dict[str, np.ndarray]  # what finished jobs left, by name
  metadata: dict


def _key(path) -> str:
  return jax.tree_util.keystr(path)


def _checksum(arrays: dict[str, np.ndarray]) -> str:
  digest = hashlib.sha256()
  for name in sorted(arrays):
    value = np.ascontiguousarray(arrays[name])
    digest.update(f'{name}|{value.dtype.str}|{value.shape}|'.encode())
    digest.update(value.data)
  return digest.hexdigest()


_saved_by_this_process = 0
_TEST_SIGNALS = (
  ('MLP_KILL_AFTER_CHECKPOINT', signal.SIGKILL),
  ('MLP_STOP_AFTER_CHECKPOINT', signal.SIGSTOP),
)


def save(
  directory: Path,
  tree,
  metadata: dict,
  keep: int = 3,
  kept: dict[str, np.ndarray] | None = None,
) -> Path:
  """Writes `tree`, `kept` and `metadata` as the next checkpoint.

  Keeps the newest `keep` checkpoints. In a multi-process run every process
  must call this (the arrays are gathered from all of them); process 0 alone
  writes.
  """
  global _saved_by_this_process
  leaves = jax.tree_util.tree_flatten_with_path(distributed.to_host(tree))[0]
  # Numbers keep growing past checkpoints set aside as damaged.
  numbers = [
    int(m[1])
    for p in (directory.iterdir() if directory.is_dir() else ())
    if (m := _NUMBERED.match(p.name))
  ]
  number = max(numbers, default=0) + 1
  path = directory / f'ckpt_{number:09d}.npz'
  if distributed.is_writer():
    try:
      directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise workdir_lib.WriteError(directory, e) from None
    arrays = {f'state/{_key(p)}': np.asarray(leaf) for p, leaf in leaves}
    arrays |= {f'kept/{name}': np.asarray(v) for name, v in (kept or {}).items()}
    arrays[_METADATA] = np.asarray(json.dumps({'format': FORMAT, **metadata}))
    arrays[_CHECKSUM] = np.asarray(_checksum(arrays))
    with workdir_lib.atomic_open(path, 'wb') as f:
      np.savez(f, **arrays)
    for old in all_checkpoints(directory)[:-keep]:
      old.unlink(missing_ok=True)
  _saved_by_this_process += 1
  for variable, signum in _TEST_SIGNALS:
    if os.environ.get(variable) == str(_saved_by_this_process):
      os.kill(os.getpid(), signum)
  return path


def all_checkpoints(directory: Path) -> list[Path]:
  """Checkpoint files in `directory`, oldest first."""
  if not directory.is_dir():
    return []
  return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def read(path: Path) -> Contents:
  """Reads and checks a checkpoint.

  Raises:
    Damaged: when the file is unreadable, incomplete, or its content does not
      match its checksum.
  """
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
    metadata = json.loads(str(arrays[_METADATA]))
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise Damaged(f'{type(e).__name__}: {e}') from None
  if _CHECKSUM not in arrays and not (
    isinstance(metadata, dict) and metadata.get('format') == FORMAT
  ):
    raise UserError(
      f'checkpoint {path} was not written by this version: pass --restart to start over'
    )
  if _checksum({k: v for k, v in arrays.items() if k != _CHECKSUM}) != str(
    arrays.get(_CHECKSUM)
  ):
    raise Damaged('its content does not match its checksum')
  del arrays[_CHECKSUM]
  del arrays[_METADATA]
  split = {'state/': {}, 'kept/': {}}
  for name, value in arrays.items():
    prefix = name[: name.index('/') + 1] if '/' in name else ''
    if prefix not in split:
      raise Damaged(f'unexpected entry {name!r}')
    split[prefix][name[len(prefix) :]] = value
  return Contents(split['state/'], split['kept/'], metadata)


def restore(contents: Contents, like, path: Path):
  """The state of a checkpoint in the structure of `like` (NumPy arrays).

  Raises:
    UserError: when the state does not fit `like`.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  restored = []
  for path_, leaf in leaves:
    key = _key(path_)
    value = contents.state.get(key)
    if value is None or value.shape != leaf.shape:
      raise UserError(
        f'checkpoint {path} does not fit this run ({key}); pass --restart to start over'
      )
    restored.append(value.astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, restored)


def newest_intact(directory: Path) -> tuple[Path, Contents] | None:
  """The newest checkpoint that reads back intact, and what it holds.

  Damaged newer ones get a warning that names them and are renamed to
  `*.damaged` (by process 0), so that they leave the rotation.

  Raises:
    UserError: when there are checkpoints but none is intact.
  """
  checkpoints = all_checkpoints(directory)
  for path in reversed(checkpoints):
    try:
      return path, read(path)
    except Damaged as e:
      logging.warning(
        'Checkpoint %s is damaged (%s); trying the one before it.', path, e
      )
      if distributed.is_writer():
        workdir_lib.note_written(path.with_name(path.name + '.damaged'))
        path.replace(path.with_name(path.name + '.damaged'))
  if checkpoints:
    raise UserError(
      f'no intact checkpoint in {directory} (all {len(checkpoints)} are damaged): '
      'pass --restart to start over'
    )
  return None


def describe_newest(workdir: Path) -> str:
  """What a run that stopped now keeps: its newest checkpoint, if intact."""
  checkpoints = all_checkpoints(workdir / DIRNAME)
  if not checkpoints:
    return 'no checkpoint was written yet: the same command starts over'
  try:
    job = read(checkpoints[-1]).metadata.get('job')
  except (Damaged, UserError):
    return f'the newest checkpoint, {checkpoints[-1]}, is damaged'
  at = f' (step {job["history"][-1]["step"]})' if job and job['history'] else ''
  return (
    f'the newest checkpoint, {checkpoints[-1]}{at}, is intact: the same command resumes'
  )


def config_changes(old: dict, new: dict) -> list[str]:
  """`'field: old -> new'` for each training-relevant difference."""
  fields = sorted((set(old) | set(new)) - RESUMABLE_FIELDS)
  return [
    f'{f}: {old.get(f)!r} -> {new.get(f)!r}' for f in fields if old.get(f) != new.get(f)
  ]


def prepare_resume(
  workdir: Path, config: dict, restart: bool, outputs: tuple[str, ...]
) -> tuple[Path, Contents] | None:
  """Decides how a run uses `workdir` (which this process has claimed).

  A run that starts from scratch first deletes every file that the workdir's
  manifest names (`workdir.remove_written`): the outputs and checkpoints of
  any earlier run, of whatever kind, so that nothing stale is left for eval or
  predict to find. Files the manifest does not name are never deleted: a
  run whose own files (`config.json`, `outputs`) are among them is refused.

  Args:
    workdir: an existing directory.
    config: this run's config, as a dict.
    restart: start over, whatever the workdir holds.
    outputs: the files this kind of run writes.

  Returns:
    The newest intact checkpoint and its contents, or None to start from
    scratch.

  Raises:
    UserError: when the workdir holds a run of a different config, files of
      its own names that this tool did not write, or checkpoints of which none
      is intact.
  """
  writer = distributed.is_writer()  # process 0 deletes; the others follow it
  if writer and (foreign := workdir_lib.foreign(workdir, ('config.json', *outputs))):
    raise UserError(
      f'workdir {workdir} holds {", ".join(foreign)}, which this tool did not write '
      f'(its {workdir_lib.MANIFEST} does not name them): move them away, or pass '
      'another --workdir'
    )
  if restart:
    if writer:
      workdir_lib.remove_written(workdir)
    return None
  found = newest_intact(workdir / DIRNAME)
  if found is not None:
    path, contents = found
    stored, source = contents.metadata.get('config'), f'checkpoint {path.name}'
  elif (workdir / 'config.json').is_file():
    stored = workdir_lib.read_json(
      workdir / 'config.json', fix='pass --restart to start over'
    )
    source = 'config.json'
  else:
    stored, source = None, None
  # Through JSON, so that tuples compare equal to the lists a file holds.
  changes = (
    config_changes(stored or {}, json.loads(json.dumps(config))) if source else []
  )
  if changes:
    raise UserError(
      f'workdir {workdir} holds a run with another config ({"; ".join(changes[:3])}; '
      f'from its {source}): pass --restart to overwrite it, or use another --workdir'
    )
  if found is None and writer:  # from scratch: nothing of an earlier run stays
    workdir_lib.remove_written(workdir)
  return found


def truncate_jsonl(path: Path, max_step: int) -> None:
  """Keeps the complete lines of `path` whose `step` is at most `max_step`."""
  if not path.is_file():
    return
  kept = []
  for line in path.read_text(errors='replace').splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by a kill, or damaged
      continue
    if not isinstance(record, dict):
      continue
    if record.get('step', 0) <= max_step:
      kept.append(line)
  with workdir_lib.atomic_open(path) as f:
    f.write(''.join(line + '\n' for line in kept))
