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
from configs import default  # noqa: E402
from mlp import data, evaluation, hparams, loop  # noqa: E402

_ITERS = flags.DEFINE_integer('num_iters', None, "Steps (default: the config's).")


def numpy_train(config, dataset) -> tuple[dict, float]:
  """The course's loop: sample, forward, backward by hand, SGD, decay per epoch."""
  rng = np.random.default_rng(config.seed)
  d, h, c = dataset.train_images.shape[1], config.hidden_size, dataset.num_classes
  params = {
    'W1': config.init_std * rng.standard_normal((d, h), dtype=np.float32),
    'b1': np.zeros(h, np.float32),
    'W2': config.init_std * rng.standard_normal((h, c), dtype=np.float32),
    'b2': np.zeros(c, np.float32),
  }
  images, labels = dataset.train_images, dataset.train_labels
  n, batch, reg = len(labels), config.batch_size, config.l2_reg
  iters_per_epoch, lr = max(n // batch, 1), config.learning_rate
  t0 = time.perf_counter()
  for step in range(config.num_iters):
    idx = rng.integers(0, n, batch)
    x, y = images[idx].astype(np.float32) / 255.0, labels[idx]
    z1 = x @ params['W1'] + params['b1']
    a1 = np.maximum(z1, 0)
    scores = a1 @ params['W2'] + params['b2']
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=1, keepdims=True)
    dscores = probs
    dscores[np.arange(batch), y] -= 1
    dscores /= batch
    grads = {
      'W2': a1.T @ dscores + reg * params['W2'],
      'b2': dscores.sum(axis=0),
    }
    dz1 = (dscores @ params['W2'].T) * (z1 > 0)
    grads['W1'] = x.T @ dz1 + reg * params['W1']
    grads['b1'] = dz1.sum(axis=0)
    for name in params:
      params[name] -= lr * grads[name]
    if (step + 1) % iters_per_epoch == 0:
      lr *= config.lr_decay
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
