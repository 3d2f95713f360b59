"""JAX's persistent compilation cache: a rerun of the same program skips XLA.

Compiled programs are stored under a directory (by default
`$XDG_CACHE_HOME/mlp-jax`, else `~/.cache/mlp-jax`), keyed by the program,
the compiler options, the device and the JAX version, so a second run of the
same configuration loads its programs instead of compiling them
(docs/performance.md measures the saving).
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
  return path
