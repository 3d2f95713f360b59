"""How fast a sweep step is with the models' first layers stacked tall.

  .venv/bin/python bench/tall_layout.py [--models=27] [--hidden=300] [--batch=200]

Trains `--models` copies of the course's network (SGD with an L2 penalty, one
learning rate per model, one shared mini-batch per step) three ways in the same
run, all differentiated with `jax.grad` and compiled as one loop:

- vmap: the per-model loss and update vmapped over a model axis in front
  (`W1` is `(models, D, H)`), as the core step (`mlp/step/core.py`) runs the
  sweeps that no fast path covers;
- wide: `W1` stored `(D, models, H)`, so `x @ W1` is one `(B, D) x (D, models*H)`
  matmul (an earlier fast path, no longer in `mlp/`; its loss is written out
  here);
- tall: `mlp/step/tall.py`'s loss, the sweep's fast path: `W1` stored
  `(models, H, D)`, so `W1 @ x^T` is one `(models*H, D) x (D, B)` matmul, and
  the second layer runs model axis first with no transposes.

Each is compiled twice, with XLA's default options and with a sweep's training
loop's (`mlp/step/xla_options.py`, `compiler_options(many_models=True)`). It
checks that all give the same params, then prints each one's time per step
(best of three) and its fraction of the measured matmul peak. Results:
docs/performance.md, "The tall layout against vmap and the wide layout".
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mlp import model  # noqa: E402
from mlp.step import tall, xla_options  # noqa: E402

_MODELS = flags.DEFINE_integer('models', 27, 'Models trained at once.')
_HIDDEN = flags.DEFINE_integer('hidden', 300, 'Hidden units per model.')
_BATCH = flags.DEFINE_integer('batch', 200, 'Mini-batch size.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Steps per timed loop.')

D, C, N_TRAIN, L2 = 784, 10, 55000, 1e-4


def best_seconds(fn, *args, repeats=3):
  jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def main(argv):
  del argv
  m, h, b = _MODELS.value, _HIDDEN.value, _BATCH.value
  key = jax.random.key(0)
  images = jax.random.randint(key, (N_TRAIN, D), 0, 256).astype(jnp.uint8)
  labels = jax.random.randint(jax.random.key(1), (N_TRAIN,), 0, C)
  rates = jnp.linspace(0.1, 0.2, m)

  def batch(step):
    idx = jax.random.randint(jax.random.fold_in(key, step), (b,), 0, N_TRAIN)
    return images[idx].astype(jnp.float32) / 255.0, labels[idx]

  def model_loss(p, x, y):
    hidden = jax.nn.relu(x @ p['W1'] + p['b1'])
    penalty = jnp.sum(p['W1'] ** 2) + jnp.sum(p['W2'] ** 2)
    return model.cross_entropy(hidden @ p['W2'] + p['b2'], y) + 0.5 * L2 * penalty

  def vmapped_step(step, params):
    x, y = batch(step)

    def one(p, rate):
      grads = jax.grad(model_loss)(p, x, y)
      return jax.tree.map(lambda w, g: w - rate * g, p, grads)

    return jax.vmap(one)(params, rates)

  def wide_loss(p, x, y):
    z = (x @ p['W1'].reshape(D, m * h)).reshape(b, m, h) + p['b1']
    logits = jnp.einsum('bmh,mhc->bmc', jax.nn.relu(z), p['W2']) + p['b2']
    data = jnp.sum(jax.vmap(model.cross_entropy, in_axes=(1, None))(logits, y))
    return data + 0.5 * L2 * (jnp.sum(p['W1'] ** 2) + jnp.sum(p['W2'] ** 2))

  per_model = {'W1': (1, m, 1), 'b1': (m, 1), 'W2': (m, 1, 1), 'b2': (m, 1)}

  def wide_step(step, params):
    grads = jax.grad(wide_loss)(params, *batch(step))
    return {k: params[k] - rates.reshape(per_model[k]) * grads[k] for k in params}

  def tall_step(step, params):
    x, y = batch(step)
    loss = lambda p: tall.loss_and_cross_entropy(p, x, y, L2, None, None)[0]  # noqa: E731
    grads = jax.grad(loss)(params)
    return {k: w - tall.per_model(rates, w) * grads[k] for k, w in params.items()}

  keys = jax.random.split(jax.random.key(2), 2)
  stacked = {
    'W1': 0.01 * jax.random.normal(keys[0], (m, D, h)),
    'b1': jnp.zeros((m, h)),
    'W2': 0.01 * jax.random.normal(keys[1], (m, h, C)),
    'b2': jnp.zeros((m, C)),
  }
  layouts = {
    'vmap': (vmapped_step, stacked, lambda p: p),
    'wide': (
      wide_step,
      {**stacked, 'W1': jnp.transpose(stacked['W1'], (1, 0, 2))},
      lambda p: {**p, 'W1': jnp.transpose(p['W1'], (1, 0, 2))},
    ),
    'tall': (tall_step, tall.to_tall(stacked), tall.from_tall),
  }

  def loop(step_fn, steps, options):
    return jax.jit(
      lambda p: jax.lax.fori_loop(0, steps, step_fn, p), compiler_options=options
    )

  reference = loop(vmapped_step, 3, {})(stacked)
  for step_fn, params, to_stacked in layouts.values():
    check = to_stacked(loop(step_fn, 3, {})(params))
    for k in ('W1', 'W2'):
      np.testing.assert_allclose(check[k], reference[k], rtol=1e-4, atol=1e-6)

  square = jax.random.normal(key, (2048, 2048))
  peak = 2 * 2048**3 / best_seconds(jax.jit(lambda a: a @ a), square) / 1e12
  flops = m * b * (4 * D * h + 6 * h * C)
  steps = _STEPS.value
  print(
    f'{m} models, H {h}, batch {b}; peak {peak:.3f} TFLOP/s '
    f'({jax.devices()[0].device_kind}, JAX {jax.__version__}); same params: yes'
  )
  print(f'{"layout":>6} {"XLA options":>14} {"ms/step":>8} {"of peak":>8}')
  for name, (step_fn, params, _) in layouts.items():
    for label, options in (
      ('default', {}),
      ('training', xla_options.compiler_options(many_models=True)),
    ):
      seconds = best_seconds(loop(step_fn, steps, options), params) / steps
      print(
        f'{name:>6} {label:>14} {1e3 * seconds:8.2f} '
        f'{100 * flops / seconds / 1e12 / peak:7.1f}%'
      )


if __name__ == '__main__':
  app.run(main)
