"""The default configuration trained the course's way (NumPy) and with this project.

  .venv/bin/python bench/numpy_vs_jax.py [--num_iters=2000]

Same algorithm, same data, same hyperparameters (H 300, batch 200 drawn with
replacement, lr 0.1 decayed 0.95 per epoch, lambda 1e-4, 2000 iterations,
init N(0, 1e-4^2)): a NumPy implementation with the course's hand-written
backward pass, then `mlp/loop.py`'s `train` (the whole run as one jitted
function: init, then `lax.scan` over segments). Both timed in this run,
training only (the JAX compile reported apart); prints both validation
accuracies (`mlp/evaluation.py`) and the speed ratio. Results:
docs/performance.md, "NumPy against JAX".
"""

import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import plain_mlp  # noqa: E402  (bench/, beside this script)

from configs import default  # noqa: E402
from mlp import data, evaluation, hparams, loop  # noqa: E402

_ITERS = flags.DEFINE_integer('num_iters', None, "Steps (default: the config's).")


def numpy_train(config, dataset) -> tuple[dict, float]:
  """`bench/plain_mlp.py`'s NumPy loop on `dataset`'s training split, timed."""
  t0 = time.perf_counter()
  params = plain_mlp.numpy_train(
    config, dataset.train_images, dataset.train_labels, dataset.num_classes
  )
  return params, time.perf_counter() - t0


def main(argv):
  del argv
  config = default.get_config()
  config.num_iters = _ITERS.value or config.num_iters
  config.eval_every = config.num_iters  # one evaluation, at the end
  dataset = data.from_config(config)
  params, numpy_seconds = numpy_train(config, dataset)
  numpy_val = evaluation.split_accuracy(params, dataset.val_images, dataset.val_labels)

  static = loop.static_for([config], dataset)
  values = jax.device_put(hparams.of_config(config))
  device = loop.device_data(dataset)
  fn = jax.jit(loop.train, static_argnames='static')
  t0 = time.perf_counter()
  compiled = fn.lower(values, device, static=static).compile()
  compile_seconds = time.perf_counter() - t0
  jax.block_until_ready(compiled(values, device))  # warm
  t0 = time.perf_counter()
  jax_params, _ = compiled(values, device)
  jax.block_until_ready(jax_params)
  jax_seconds = time.perf_counter() - t0
  jax_val = evaluation.split_accuracy(
    jax_params, dataset.val_images, dataset.val_labels
  )
  print(
    f'NumPy: {numpy_seconds:.2f} s for {config.num_iters} steps, val {numpy_val:.4f}'
  )
  print(
    f'JAX:   {jax_seconds:.2f} s (compile {compile_seconds:.2f} s apart), val {jax_val:.4f}'
  )
  print(
    f'JAX is {numpy_seconds / jax_seconds:.1f}x faster ({jax.default_backend()}, '
    f'JAX {jax.__version__}, NumPy {np.__version__})'
  )


if __name__ == '__main__':
  app.run(main)
