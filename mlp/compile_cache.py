"""JAX's persistent compilation cache: a rerun of the same program skips XLA.

Compiled programs are stored under a directory (by default
`$XDG_CACHE_HOME/mlp-jax`, else `~/.cache/mlp-jax`), keyed by the program,
the compiler options, the device and the JAX version, so a second run of the
same configuration loads its programs instead of compiling them
(docs/performance.md measures the saving).

An entry that fails to load (cut short, or damaged on disk) is deleted, so that
the program is compiled and its entry written again: JAX itself would warn on
every later run and never replace it.
"""

import os
from pathlib import Path

from absl import logging


def default_dir() -> str:
  """`$XDG_CACHE_HOME/mlp-jax`, or `~/.cache/mlp-jax`."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
  return os.path.join(base, 'mlp-jax')


def enable(directory: str) -> Path | None:
  """Caches every compiled program under `directory` ('' turns caching off).

  A directory that cannot be created or written is not an error: the run goes
  on uncached, with a warning.

  Args:
    directory: where to cache, `~` allowed; '' for no cache.

  Returns:
    The cache directory in use, or `None`.
  """
  if not directory:
    return None
  import jax  # Here, not at the top: `main.py --help` reads default_dir() without JAX.

  path = Path(directory).expanduser()
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.probe-{os.getpid()}'
    probe.write_bytes(b'')
    probe.unlink()
  except OSError as e:
    logging.warning(
      'Not caching compiled programs (%s); pass --compilation_cache_dir=DIR or '
      "--compilation_cache_dir='' to silence this.",
      e,
    )
    return None
  jax.config.update('jax_compilation_cache_dir', str(path))
  # Every program: even the small ones (init, evaluation) take a noticeable
  # part of a second to compile.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  _replace_damaged_entries(path)
  return path


def _replace_damaged_entries(path: Path) -> None:
  """Makes JAX treat an entry that fails to load as missing, after deleting it.

  JAX (0.10) reads an entry in `compilation_cache.get_executable_and_time`
  and, when that raises, warns and compiles without writing (its cache never
  overwrites a key). The wrapper deletes the entry first, so the write that
  follows the compile replaces it. JAX versions without that function keep
  their own behaviour.
  """
  from jax._src import compilation_cache, lru_cache

  read = getattr(compilation_cache, 'get_executable_and_time', None)
  if read is None or getattr(read, 'replaces_damaged', False):
    return

  def read_or_delete(cache_key: str, *args, **kwargs):
    try:
      return read(cache_key, *args, **kwargs)
    except Exception as e:  # noqa: BLE001 -- any failure to load: a damaged entry
      directory = Path(_jax_dir() or path)
      for suffix in (lru_cache._CACHE_SUFFIX, getattr(lru_cache, '_ATIME_SUFFIX', '')):
        if suffix:
          (directory / f'{cache_key}{suffix}').unlink(missing_ok=True)
      logging.warning(
        'Compilation cache entry %s could not be loaded (%s: %s); it was deleted '
        'and is compiled again.',
        cache_key,
        type(e).__name__,
        ' '.join(str(e).split())[:200],
      )
      return None, None

  read_or_delete.replaces_damaged = True
  compilation_cache.get_executable_and_time = read_or_delete


def _jax_dir() -> str | None:
  """The cache directory JAX uses now (`jax_compilation_cache_dir`)."""
  import jax

  return jax.config.jax_compilation_cache_dir
