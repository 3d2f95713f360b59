"""Experiment: would hand-written CPU kernels lift the default step toward 75% of peak?

  .venv/bin/python bench/ffi_gemm.py [--rounds=10]

The default configuration's step reaches about 55-62% of the 2048^3 matmul
peak on the 2-core CPU, and a loop of only its first-layer matmuls and W1
update about 70-78% (the benchmark's "matmuls alone"). This script tests the
obvious next step: replace XLA's Eigen matmuls with AVX-512 kernels
(`bench/ffi_gemm/first_layer.cc`, built here with the system C++ compiler and
JAX's FFI headers, registered through `jax.ffi`) that skip Eigen's operand
packing and fuse the W1 update and its sum of squares into the gradient
matmul. In one process it compiles the default configuration's training
segment (`train.train_segment`, as `--mode=train` runs it) twice: as is, and
with its step's first layer on the kernels (`kernel_step` below: the rest of
the loss is differentiated with respect to `z = x @ W1` by
`jax.value_and_grad`). It checks that both give the same weights, then times
them in turn for `--rounds` rounds, with the benchmark's statistic (segments
of k and 3k steps; each length's fastest run, and the median difference).

Needs Linux on an x86-64 CPU with AVX-512F and a C++20 compiler (`CXX`, else
g++). Measured results and what they mean are in the README's benchmark
section ("Not reached").
"""

import ctypes
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from configs import default  # noqa: E402
from mlp import benchmark, model, run, train  # noqa: E402

_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Interleaved timing rounds.')
SOURCE = pathlib.Path(__file__).resolve().parent / 'ffi_gemm' / 'first_layer.cc'
PANEL_WIDTH = 32  # kNr in first_layer.cc: row_sumsq has one column per panel.


def build_and_register(directory: str) -> None:
  if ' avx512f' not in pathlib.Path('/proc/cpuinfo').read_text():
    sys.exit('Error: the kernels need an x86-64 CPU with AVX-512F (Linux).')
  compiler = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')
  if not compiler:
    sys.exit('Error: no C++ compiler found (set CXX).')
  library = pathlib.Path(directory) / 'first_layer.so'
  cmd = [compiler, '-O3', '-std=c++20', '-mavx512f', '-mfma', '-fPIC', '-shared']
  cmd += ['-isystem', jax.ffi.include_dir(), str(SOURCE), '-o', str(library)]
  result = subprocess.run(cmd, capture_output=True, text=True)
  if result.returncode != 0:
    sys.exit(f'Error: {" ".join(cmd)} failed:\n{result.stderr.strip()}')
  lib = ctypes.cdll.LoadLibrary(str(library))
  for name, symbol in (('mlp_matmul', 'MlpMatmul'), ('mlp_sgd_update', 'MlpSgdUpdate')):
    jax.ffi.register_ffi_target(
      name, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu'
    )


def kernel_matmul(a, b):
  out = jax.ShapeDtypeStruct((a.shape[0], b.shape[1]), jnp.float32)
  return jax.ffi.ffi_call('mlp_matmul', out)(a, b)


def kernel_sgd_update(w, x, dz, lr, l2_reg):
  """`w - lr * (x^T @ dz + l2_reg * w)` in place, and `||w'||^2`."""
  panels = -(-w.shape[1] // PANEL_WIDTH)
  out = (
    jax.ShapeDtypeStruct(w.shape, jnp.float32),
    jax.ShapeDtypeStruct((w.shape[0], panels), jnp.float32),
  )
  scale = jnp.reshape(1.0 - lr * l2_reg, (1,)).astype(jnp.float32)
  step = jnp.reshape(lr, (1,)).astype(jnp.float32)
  w, row_sumsq = jax.ffi.ffi_call('mlp_sgd_update', out, input_output_aliases={0: 0})(
    w, x, dz, scale, step
  )
  return w, jnp.sum(row_sumsq)


def kernel_step(state, hparams, data, static, randomness, penalty):
  """`train.train_step` as `train_segment` calls it, for the default
  configuration (plain SGD, no dropout or label smoothing, float32), with
  `x @ W1` and W1's gradient and update on the kernels."""
  assert static.optimizer == 'sgd' and not static.use_dropout
  assert not static.use_label_smoothing and static.compute_dtype == 'float32'
  order, x, y = train._batch(state, hparams, data, static, randomness)
  params = state.params
  rest = {name: value for name, value in params.items() if name != 'W1'}

  def head_loss(z, rest):
    hidden = jax.nn.relu(z + rest['b1'])
    data_loss = model.cross_entropy(hidden @ rest['W2'] + rest['b2'], y)
    return data_loss + 0.5 * hparams.l2_reg * jnp.sum(rest['W2'] ** 2), data_loss

  z = kernel_matmul(x, params['W1'])
  (_, data_loss), (dz, grads) = jax.value_and_grad(head_loss, (0, 1), has_aux=True)(
    z, rest
  )
  active = state.step < hparams.num_iters
  lr = jnp.where(active, train.learning_rate_at(hparams, state.step, static), 0.0)
  w1, w1_sumsq = kernel_sgd_update(params['W1'], x, dz, lr, hparams.l2_reg)
  new = {'W1': w1, **{name: rest[name] - lr * grads[name] for name in rest}}
  state = state._replace(params=new, step=state.step + 1, order=order)
  loss = data_loss + 0.5 * hparams.l2_reg * penalty
  return state, loss, active, w1_sumsq + jnp.sum(new['W2'] ** 2)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as directory:
    build_and_register(directory)
    peak = benchmark.peak_tflops(2048, 'float32')
    print(f'cpu, JAX {jax.__version__}; 2048^3 float32 matmul peak {peak:.3f} TFLOP/s')

    config = default.get_config()
    dataset = run.load_data(config)
    compiled = {
      'XLA': benchmark.compile_training(config, dataset, 300, 200, 1, 'float32')
    }
    xla_step = train.train_step
    train.train_step = kernel_step  # what train_segment traces
    run.compiled_functions.cache_clear()
    jax.clear_caches()
    try:
      compiled['kernels'] = benchmark.compile_training(
        config, dataset, 300, 200, 1, 'float32'
      )
    finally:
      train.train_step = xla_step
    finals = [c.call(c.init(), 300)[0].params['W1'] for c in compiled.values()]
    difference = float(jnp.max(jnp.abs(finals[0] - finals[1])))
    scale = float(jnp.max(jnp.abs(finals[0])))
    print(
      f'The default training step (after 300 steps W1 differs by {difference:.1e}, '
      f'its largest entry {scale:.1e}):'
    )
    if not difference <= 1e-3 * scale:
      sys.exit('Error: the kernel step does not match the XLA step.')

    steps = 100

    def timed(c, n):
      state = c.init()
      jax.block_until_ready(state)
      t0 = time.perf_counter()
      jax.block_until_ready(c.call(state, n))
      return time.perf_counter() - t0

    shorts = {name: [] for name in compiled}
    longs = {name: [] for name in compiled}
    for c in compiled.values():
      timed(c, steps)  # warm-up
    for _ in range(_ROUNDS.value):
      for name, c in compiled.items():
        shorts[name].append(timed(c, steps))
        longs[name].append(timed(c, 3 * steps))
    flops = 200 * benchmark.flops_per_example(784, 300, 10)
    best = {}
    for name in compiled:
      best[name] = (min(longs[name]) - min(shorts[name])) / (2 * steps)
      median = float(np.median(np.subtract(longs[name], shorts[name]))) / (2 * steps)
      print(
        f'  {name:8s} {best[name] * 1e3:6.3f} ms/step '
        f'({flops / best[name] / 1e12 / peak:.1%} of peak), median {median * 1e3:.3f} ms'
      )
    print(
      f"  the kernels' step takes {best['kernels'] / best['XLA']:.2f}x the XLA step's time"
    )


if __name__ == '__main__':
  app.run(main)
