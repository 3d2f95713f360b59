"""Where a training step's time goes: a per-operation profile of the compiled loop.

  .venv/bin/python bench/profile_step.py                      # configs/default.py, 1 model
  .venv/bin/python bench/profile_step.py --models=27 --steps=100

Compiles the same `train.train_segment` that `--mode=train` (one model) and
`--mode=sweep` (`--models` vmapped models, learning rates spread over x1..x2)
run, traces `--steps` steps of it with `jax.profiler`, and prints each XLA
operation's time per step, its share of the step, and what it is (the HLO
instruction, shortened), next to the step time measured without the profiler.

On CPU the per-operation events need `--xla_cpu_enable_xprof_traceme`, which
this script adds to `XLA_FLAGS` before JAX starts. XLA runs independent
operations on different threads at once, so the shares can add up to more
than 100%; the profiler itself slows small operations down a little, and a
matmul that XLA hands to a thread pool asynchronously can read shorter than
its FLOPs allow. The unprofiled step time is the reference.
"""

import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_enable_xprof_traceme=true'
).strip()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mlp import configlib, grid, run, stacked  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  'config', 'configs/default.py', 'Training config.'
)
_MODELS = flags.DEFINE_integer('models', 1, 'Models trained at once (vmapped).')
_STEPS = flags.DEFINE_integer('steps', 500, 'Steps traced.')
_TOP = flags.DEFINE_integer('top', 20, 'Operations listed.')


def compiled_segment(config, dataset, num_models):
  """`(call(state, end_step) -> (state, metrics), initial state, HLO text)`."""
  if num_models == 1:
    static = configlib.static(
      config,
      len(dataset.train_labels),
      dataset.train_images.shape[1],
      dataset.num_classes,
    )
    hparams = jax.device_put(configlib.hyperparams(config))
    data = run.device_data(dataset)
    init, segment = run.compiled_functions(
      static, run.abstract(hparams), run.abstract(data)
    )
    return (
      lambda state, end: segment(state, hparams, data, end_step=jnp.int32(end)),
      init(hparams),
      segment.as_text(),
    )
  configs = [
    grid.model_config(
      config, {'learning_rate': config.learning_rate * (1 + i / num_models)}
    )
    for i in range(num_models)
  ]
  static = configlib.static(
    configs[0],
    len(dataset.train_labels),
    dataset.train_images.shape[1],
    dataset.num_classes,
    group=configs,
  )
  mesh = stacked.model_mesh()
  data = stacked.replicated_data(dataset, mesh)
  hparams, axes = stacked.stacked_hyperparams(configs, stacked.batched_fields(configs))
  hparams = stacked.put_models(hparams, mesh, axes)
  init, segment = stacked.vmapped_functions(static, axes, mesh)
  state = init(hparams)
  segment = segment.lower(state, hparams, data, jnp.int32(0)).compile()
  return (
    lambda state, end: segment(state, hparams, data, jnp.int32(end)),
    state,
    segment.as_text(),
  )


def describe(hlo: str) -> dict[str, str]:
  """Instruction name -> what it is: `op[/fusion kind] -> shape`."""
  pattern = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w-]+)\(.*?(kind=k(\w+))?')
  found = {}
  for line in hlo.splitlines():
    match = pattern.match(line)
    if match:
      name, shape, op = match.group(1, 2, 3)
      kind = re.search(r'kind=k(\w+)', line) if op == 'fusion' else None
      found[name] = (
        f'{op}{"/" + kind.group(1) if kind else ""} -> {shape.split("{")[0]}'
      )
  return found


def matmul_floor_us(config, steps: int) -> float:
  """us/step of a loop of only the first layer's two matmuls and its update."""
  d, h, b = 784, config.hidden_size, config.batch_size
  x = jax.random.uniform(jax.random.key(0), (b, d))
  w = 0.01 * jax.random.normal(jax.random.key(1), (d, h))

  def body(_, w):
    return w - 1e-9 * (x.T @ (x @ w))

  loop = jax.jit(lambda w: jax.lax.fori_loop(0, steps, body, w))
  jax.block_until_ready(loop(w))
  t0 = time.perf_counter()
  jax.block_until_ready(loop(w))
  return (time.perf_counter() - t0) / steps * 1e6


def main(argv):
  del argv
  config = _CONFIG.value
  dataset = run.load_data(config)
  call, state, hlo = compiled_segment(config, dataset, _MODELS.value)
  steps = _STEPS.value
  state, metrics = call(state, int(state.step) + 10)  # warm-up
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  state, metrics = call(state, int(state.step) + steps)
  jax.block_until_ready(metrics)
  step_us = (time.perf_counter() - t0) / steps * 1e6
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    state, metrics = call(state, int(state.step) + steps)
    jax.block_until_ready(metrics)
    jax.profiler.stop_trace()
    (trace,) = Path(trace_dir).rglob('*.xplane.pb')
    profile = jax.profiler.ProfileData.from_file(str(trace))
  names = describe(hlo)
  totals, counts = collections.Counter(), collections.Counter()
  for plane in profile.planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in names:
          totals[event.name] += event.duration_ns / 1e3
          counts[event.name] += 1
  print(
    f'{_MODELS.value} model(s), H {config.hidden_size}, batch {config.batch_size}: '
    f'{step_us:.1f} us/step unprofiled; {jax.devices()[0].device_kind}, JAX {jax.__version__}'
  )
  print(f'{"us/step":>9} {"share":>6} {"calls/step":>10}  operation')
  for name, total in totals.most_common(_TOP.value):
    per_step = total / steps
    print(
      f'{per_step:9.1f} {100 * per_step / step_us:5.1f}% {counts[name] / steps:10.2f}  '
      f'{name}: {names[name]}'
    )
  listed = sum(t for _, t in totals.most_common(_TOP.value)) / steps
  rest = sum(totals.values()) / steps - listed
  print(f'{rest:9.1f} {100 * rest / step_us:5.1f}%             the other operations')
  if _MODELS.value == 1:
    floor = matmul_floor_us(config, steps)
    print(
      f'{floor:9.1f} {100 * floor / step_us:5.1f}%             for comparison: a loop '
      'of only x @ W1, x.T @ dZ and the W1 update at these shapes'
    )


if __name__ == '__main__':
  app.run(main)
