"""What produced a result: package versions, backend, device, git commit."""

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import jax

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ('jax', 'jaxlib', 'optax', 'numpy', 'ml-collections', 'absl-py')


def git_commit(directory: Path = REPO) -> str | None:
  """The commit checked out in `directory` (with `-dirty` if modified), or None."""
  try:
    commit = subprocess.run(
      ['git', 'rev-parse', 'HEAD'],
      cwd=directory,
      capture_output=True,
      text=True,
      timeout=5,
      check=True,
    ).stdout.strip()
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no'],
      cwd=directory,
      capture_output=True,
      text=True,
      timeout=5,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ('-dirty' if dirty else '')


def record() -> dict:
  """A JSON-able record of the software and hardware in use."""
  versions = {'python': platform.python_version()}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  device = jax.devices()[0]
  return {
    'backend': jax.default_backend(),
    'device_kind': device.device_kind,
    'num_devices': jax.device_count(),
    'platform': platform.platform(),
    'versions': versions,
    'git_commit': git_commit(),
    # Set: compile_seconds may be a load from the persistent compilation cache.
    'compilation_cache_dir': jax.config.jax_compilation_cache_dir or None,
  }
