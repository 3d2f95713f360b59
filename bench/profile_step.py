"""Where a training step's time goes: a per-operation profile of the compiled loop.

  .venv/bin/python bench/profile_step.py                      # configs/default.py, 1 model
  .venv/bin/python bench/profile_step.py --models=27 --steps=100

Compiles the same `loop.train_segment` that `--mode=train` (one model) and
`--mode=sweep` (`--models` models along a model axis, learning rates spread over
x1..x2, so the sweep's tall fast path `mlp/step/tall.py` runs) run, through
`mlp/modes/benchmark.py`'s `compile_training`; traces `--steps` steps of it with
`jax.profiler`, and prints each XLA operation's time per step, its share of the
step, and what it is (the HLO instruction, shortened), next to the step time
measured without the profiler. Results: docs/performance.md, "Where the time
goes".

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

from mlp import data  # noqa: E402
from mlp.modes import benchmark  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  'config', 'configs/default.py', 'Training config.'
)
_MODELS = flags.DEFINE_integer('models', 1, 'Models trained at once (vmapped).')
_STEPS = flags.DEFINE_integer('steps', 500, 'Steps traced.')
_TOP = flags.DEFINE_integer('top', 20, 'Operations listed.')


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


def main(argv):
  del argv
  config = _CONFIG.value
  dataset = data.from_config(config)
  num_models = _MODELS.value
  program, values, device = benchmark.compile_training(
    config,
    dataset,
    config.hidden_size,
    config.batch_size,
    num_models,
    config.compute_dtype,
  )
  state = program.init(values)
  steps = _STEPS.value

  def call(state, end_step):
    return program.segment(state, values, device, jnp.int32(end_step))

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
  names = describe(program.segment.as_text())
  totals, counts = collections.Counter(), collections.Counter()
  for plane in profile.planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in names:
          totals[event.name] += event.duration_ns / 1e3
          counts[event.name] += 1
  print(
    f'{num_models} model(s), H {config.hidden_size}, batch {config.batch_size}: '
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
  floor = 1e6 * benchmark.matmul_floor_seconds(
    program.static.input_size,
    config.hidden_size,
    config.batch_size,
    num_models,
    config.compute_dtype,
    repeats=3,
  )
  print(
    f'{floor:9.1f} {100 * floor / step_us:5.1f}%             for comparison: a loop '
    "of only x @ W1, x.T @ dZ and the W1 update at these shapes (benchmark's "
    '"matmuls alone")'
  )


if __name__ == '__main__':
  app.run(main)
