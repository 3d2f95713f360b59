"""Checkpoints: a training state saved atomically, found again, and resumed.

A checkpoint is one `.npz` in `WORKDIR/checkpoints/` holding every leaf of a
pytree (keyed by its path) plus a JSON string of metadata, named by a
sequence number that grows with every save (`ckpt_000000007.npz`). Files are
written to a temporary name and renamed, so a run killed at any moment leaves
either the previous checkpoint or the new one, never half of one. The last
`keep` are kept. This module alone knows how the files are named.

For tests of resumption, the environment variable `MLP_KILL_AFTER_CHECKPOINT=N`
makes the process kill itself (SIGKILL) right after writing its N-th
checkpoint: a kill at a known point, with no race.

Re-running a command on a workdir resumes from the newest checkpoint, but only
if the workdir's `config.json` describes the same training; otherwise the run
is refused (nothing is overwritten) unless the user asks to start over.
"""

import json
import os
import re
import shutil
import signal
from pathlib import Path

import jax
import numpy as np

from mlp import distributed
from mlp import workdir as workdir_lib
from mlp.errors import UserError

DIRNAME = 'checkpoints'
# Config fields that may change between a run and its resumption.
RESUMABLE_FIELDS = frozenset(
  {'data_dir', 'data_url', 'checkpoint_every', 'keep_checkpoints', 'write_plots'}
)
_NAME = re.compile(r'^ckpt_(\d{9})\.npz$')


def _key(path) -> str:
  return jax.tree_util.keystr(path)


_saved_by_this_process = 0


def save(directory: Path, tree, metadata: dict, keep: int = 3) -> Path:
  """Writes `tree` and `metadata` as the next checkpoint; keeps the newest `keep`.

  In a multi-process run every process must call this (the arrays are
  gathered from all of them); process 0 alone writes.
  """
  global _saved_by_this_process
  leaves = jax.tree_util.tree_flatten_with_path(distributed.to_host(tree))[0]
  existing = all_checkpoints(directory)
  number = int(_NAME.match(existing[-1].name)[1]) + 1 if existing else 1
  path = directory / f'ckpt_{number:09d}.npz'
  if distributed.is_writer():
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {_key(path): np.asarray(leaf) for path, leaf in leaves}
    arrays['__metadata__'] = np.asarray(json.dumps(metadata))
    with workdir_lib.atomic_open(path, 'wb') as f:
      np.savez(f, **arrays)
    for old in all_checkpoints(directory)[:-keep]:
      old.unlink(missing_ok=True)
  _saved_by_this_process += 1
  if os.environ.get('MLP_KILL_AFTER_CHECKPOINT') == str(_saved_by_this_process):
    os.kill(os.getpid(), signal.SIGKILL)
  return path


def all_checkpoints(directory: Path) -> list[Path]:
  """Checkpoint files in `directory`, oldest first."""
  if not directory.is_dir():
    return []
  return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def restore(path: Path, like):
  """Loads a checkpoint into the structure of `like`.

  Args:
    path: a file written by `save`.
    like: a pytree with the structure, shapes and dtypes expected.

  Returns:
    `(tree, metadata)`, the tree as NumPy arrays.

  Raises:
    UserError: when the file is unreadable or does not fit `like`.
  """
  try:
    with np.load(path) as npz:
      stored = {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e:
    raise UserError(
      f'cannot read checkpoint {path} ({e}); delete it to resume from an older one'
    ) from None
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  restored = []
  for path_, leaf in leaves:
    key = _key(path_)
    value = stored.get(key)
    if value is None or value.shape != leaf.shape:
      raise UserError(
        f'checkpoint {path} does not fit this run ({key}); pass --restart to start over'
      )
    restored.append(value.astype(leaf.dtype))
  metadata = json.loads(str(stored['__metadata__']))
  return jax.tree_util.tree_unflatten(treedef, restored), metadata


def config_changes(old: dict, new: dict) -> list[str]:
  """`'field: old -> new'` for each training-relevant difference."""
  fields = sorted((set(old) | set(new)) - RESUMABLE_FIELDS)
  return [
    f'{f}: {old.get(f)!r} -> {new.get(f)!r}' for f in fields if old.get(f) != new.get(f)
  ]


def prepare_resume(
  workdir: Path, config: dict, restart: bool, outputs: tuple[str, ...]
) -> Path | None:
  """Decides how a run uses `workdir`; returns the checkpoint to resume from.

  Args:
    workdir: an existing directory.
    config: this run's config, as a dict.
    restart: start over: delete this run kind's outputs and checkpoints.
    outputs: the files this kind of run writes (deleted on restart).

  Returns:
    The newest checkpoint, or None to start from scratch.

  Raises:
    UserError: when the workdir holds a run of a different config.
  """
  config_path = workdir / 'config.json'
  if restart:
    if distributed.is_writer():
      shutil.rmtree(workdir / DIRNAME, ignore_errors=True)
      for name in ('config.json', *outputs):
        (workdir / name).unlink(missing_ok=True)
    return None
  if config_path.is_file():
    # Through JSON, so that tuples compare equal to the lists config.json holds.
    changes = config_changes(
      workdir_lib.read_json(config_path), json.loads(json.dumps(config))
    )
    if changes:
      raise UserError(
        f'workdir {workdir} holds a run with another config ({"; ".join(changes[:3])}): '
        'pass --restart to overwrite it, or use another --workdir'
      )
  checkpoints = all_checkpoints(workdir / DIRNAME)
  return checkpoints[-1] if checkpoints else None


def truncate_jsonl(path: Path, max_step: int) -> None:
  """Keeps the complete lines of `path` whose `step` is at most `max_step`."""
  if not path.is_file():
    return
  kept = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by a kill
      continue
    if record.get('step', 0) <= max_step:
      kept.append(line)
  with workdir_lib.atomic_open(path) as f:
    f.write(''.join(line + '\n' for line in kept))


def read_metadata(path: Path) -> dict:
  """The metadata of a checkpoint, without its arrays."""
  try:
    with np.load(path) as npz:
      return json.loads(str(npz['__metadata__']))
  except (OSError, ValueError, KeyError) as e:
    raise UserError(
      f'cannot read checkpoint {path} ({e}); pass --restart to start over'
    ) from None
