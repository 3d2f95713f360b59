"""XLA compiler options for the training loops: speed only, never results.

- Region-based copy insertion lets the loop update `W1` in place instead of
  copying it every step.
- With float32 matmuls, YNNPACK takes only the reductions (the L2 penalty:
  one read of `W1`, where XLA's own tree reduction writes `W1` squared first);
  the matmuls stay with XLA's Eigen dots, which run the training step's float32
  shapes faster. bfloat16 matmuls are faster in YNNPACK, so there it keeps them.
- Many models at once use XLA's concurrency-optimized scheduler (the penalty's
  read of `W1` overlaps the matmuls).

`docs/performance.md` records what each was measured to give. The options are
experimental and change between jaxlib versions: one that this XLA does not
know is left out with a warning instead of failing the compile.
"""

import functools

import jax
import jax.numpy as jnp
from absl import logging

CPU = {'xla_cpu_copy_insertion_use_region_analysis': True}
CPU_FLOAT32 = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}
CPU_MANY_MODELS = {'xla_cpu_enable_concurrency_optimized_scheduler': True}


def compiler_options(compute_dtype: str = 'float32', many_models: bool = False) -> dict:
  """The XLA options for a training loop on the default backend.

  Args:
    compute_dtype: the matmuls' input dtype (`Static.compute_dtype`).
    many_models: whether the loop trains a stacked group of models.
  """
  if jax.default_backend() != 'cpu':
    return {}
  options = dict(CPU)
  if compute_dtype == 'float32':
    options.update(CPU_FLOAT32)
  if many_models:
    options.update(CPU_MANY_MODELS)
  return {name: value for name, value in options.items() if _known(name, value)}


@functools.cache
def _known(name: str, value) -> bool:
  """Whether XLA accepts the compiler option `name=value` (a trivial compile)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(
      jnp.zeros(())
    ).compile()
  except jax.errors.JaxRuntimeError as error:
    logging.warning('XLA option %s=%r left out: %s', name, value, error)
    return False
  return True
