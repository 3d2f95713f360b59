"""`--mode=benchmark`: how close training comes to the device's matmul peak.

In one run: a large square matmul in the dtype in use is timed (warmed up,
`block_until_ready`; before each row and once after the last); then, for every
combination of hidden size, batch size and number of vmapped models in the
config, the same compiled `loop.train_segment` that train and sweep use is
timed in steady state (`time_training`). Useful work is counted analytically:
per example and model, forward `2DH + 2HC` and backward `2DH + 4HC` FLOPs (no
gradient for the input). Each row also times the first layer's two matmuls and
update alone at its shapes (`matmul_floor_seconds`), the ceiling a training
step of that shape could reach.

Each figure is defined once. The peak is the fastest matmul throughput measured
in the run: the square matmuls' and every row's matmul-only loop (a shared
machine's speed drifts, and a loop that beat the square matmul shows the device
can do at least that). Every fraction of peak is against that one peak, so it
is known only at the end: the log's per-row lines give times and TFLOP/s, the
table the fractions.
"""

import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mlp import data as data_lib
from mlp import hparams, loop, model_axis
from mlp import workdir as workdir_lib
from mlp.errors import UserError
from mlp.hparams import Hyperparams
from mlp.progress import plural
from mlp.search import space
from mlp.step import core, xla_options

COLUMNS = (
  'backend',
  'device_kind',
  'hidden_size',
  'batch_size',
  'num_models',
  'step_seconds',
  'model_examples_per_second',
  'achieved_tflops',
  'peak_tflops_measured',
  'fraction_of_peak',
  'compile_seconds',
)
# Beyond the contract: the first layer's two matmuls alone (`matmul_floor_seconds`).
FLOOR_COLUMNS = ('floor_step_seconds', 'floor_tflops', 'floor_fraction_of_peak')
FLOOR_UNROLL = 8


def flops_per_example(input_size: int, hidden_size: int, num_classes: int) -> int:
  """Useful FLOPs of one training example: forward plus backward, no input grad."""
  d, h, c = input_size, hidden_size, num_classes
  return (2 * d * h + 2 * h * c) + (2 * d * h + 4 * h * c)


def _best_time(fn, repeats: int) -> float:
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t0)
  return best


def peak_tflops(size: int, dtype: str, repeats: int = 5) -> float:
  """Measured matmul throughput: `(size, size) @ (size, size)` in `dtype`."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))  # compile and warm up
  seconds = _best_time(lambda: matmul(a), repeats)
  return 2 * size**3 / seconds / 1e12


def matmul_floor_seconds(
  input_size: int,
  hidden_size: int,
  batch_size: int,
  num_models: int,
  dtype: str,
  repeats: int,
  min_seconds: float = 0.25,
) -> float:
  """Seconds per step of a loop doing only the first layer's matmuls and update.

  `Z^T = W1 @ x^T`, `W1 -= c * Z^T @ x` for all models stacked in one tall
  `(models * H, D)` matrix, the layout of `step.tall` (a sweep's fast path), compiled
  with the training loop's XLA options: the best case for the step's dominant
  work, with nothing else (no softmax, second layer, batch gather or evaluation).
  `FLOOR_UNROLL` steps per loop iteration keep the loop's own cost (on a GPU, a
  round trip to the host per iteration) out of it. The loop is lengthened until
  one call takes `min_seconds`.
  """
  key_x, key_w = jax.random.split(jax.random.key(0))
  x = jax.random.uniform(key_x, (batch_size, input_size)).astype(dtype)
  w = 0.01 * jax.random.normal(key_w, (num_models * hidden_size, input_size))

  def loop(w, x, rounds):
    def body(_, w):
      for _ in range(FLOOR_UNROLL):
        z = jnp.einsum(
          'kd,bd->kb', w.astype(dtype), x, preferred_element_type=jnp.float32
        )
        grad = jnp.matmul(z.astype(dtype), x, preferred_element_type=jnp.float32)
        w = w - 1e-9 * grad
      return w

    return jax.lax.fori_loop(0, rounds, body, w)

  options = xla_options.compiler_options(dtype, many_models=num_models > 1)
  loop = jax.jit(loop, compiler_options=options)
  rounds = 1
  while _best_time(lambda n=rounds: loop(w, x, n), 1) < min_seconds and rounds < 2**11:
    rounds *= 2
  return _best_time(lambda: loop(w, x, rounds), repeats) / (rounds * FLOOR_UNROLL)


def compile_training(
  config, dataset, hidden_size, batch_size, num_models, compute_dtype
) -> tuple[loop.Program, Hyperparams, core.DeviceData]:
  """`config` at these shapes, as train (1 model) or sweep (vmapped) compiles it.

  The models differ in learning rate only (spread over x1..x2), so they share
  their batches, as the course's sweeps do; training is long enough for any
  timed stretch.

  Returns:
    The program, its hyperparameters and its data, on device.
  """
  base = ml_collections.ConfigDict(config.to_dict())
  base.hidden_size, base.batch_size = hidden_size, batch_size
  base.compute_dtype = compute_dtype
  base.num_iters = 2**16
  # A segment ends with an evaluation, a fixed cost that `step_times` takes
  # out. On one batch of training and of validation images it stays small, so
  # short stretches measure the steps: on 5,000 of each, the 27 models' check
  # costs as much as about 40 of their steps, and each timed stretch must
  # outgrow it.
  base.train_eval_size = batch_size
  dataset = dataclasses.replace(
    dataset,
    val_images=dataset.val_images[:batch_size],
    val_labels=dataset.val_labels[:batch_size],
  )
  configs = [
    space.model_config(
      base, {'learning_rate': base.learning_rate * (1 + i / num_models)}
    )
    for i in range(num_models)
  ]
  static = loop.static_for(configs, dataset)
  if num_models == 1:
    values = jax.device_put(hparams.of_config(configs[0]))
    data = loop.device_data(dataset)
    return loop.compile_one(static, values, data), values, data
  mesh = model_axis.model_mesh()
  data = model_axis.replicated_data(dataset, mesh)
  values, axes = hparams.stack([hparams.of_config(c) for c in configs])
  values = model_axis.put_models(values, mesh, axes)
  return loop.compile_many(static, values, axes, data, mesh), values, data


class TrainingTime(NamedTuple):
  """Timings of one combination (see `time_training`)."""

  step_seconds: float  # steady state, from the fastest long segment
  step_seconds_median: float  # steady state, from the median long segment
  compile_seconds: float
  static: core.Static


def step_times(shorts: list[float], longs: list[float], steps: int) -> np.ndarray:
  """Seconds per step of each long segment, its fixed cost taken out.

  A segment of `k` steps takes `fixed + k * step`. The fastest runs of the two
  lengths (`k = steps` and `2 * steps`) give `fixed = 2 * short - long` (noise
  on a shared machine only ever adds time); each long run then gives
  `(long - fixed) / (2 * steps)`. The fastest of these equals
  `(min(longs) - min(shorts)) / steps`, and no other is faster, so the median
  is never below it. When the noise of a busy machine leaves the short runs no
  faster than the long ones, `fixed` is taken as 0: each time is then an upper
  bound, the fixed cost included.

  Args:
    shorts: seconds of each run of `steps` steps.
    longs: seconds of each run of `2 * steps` steps.
    steps: the short segments' length.

  Returns:
    `(len(longs),)` seconds per step, in the order of `longs`.
  """
  fixed = max(2 * min(shorts) - min(longs), 0.0)
  if fixed >= min(longs):
    fixed = 0.0
  return np.maximum((np.asarray(longs) - fixed) / (2 * steps), 1e-9)


def time_training(
  config, dataset, hidden_size, batch_size, num_models, steps, repeats, min_seconds
) -> TrainingTime:
  """Steady-state seconds per step, and compile seconds, of one combination.

  A segment of `k` steps costs `fixed + k s` (`fixed`: the evaluation and the
  dispatch at its end), so `s` is the difference between segments of `2k`
  and `k` steps over `k`; `k` starts at `steps` and doubles until the
  difference is at least `min_seconds`. Each length is timed `repeats` times;
  `step_times` turns the runs into seconds per step: `step_seconds` is the
  fastest, as the peak's is, `step_seconds_median` their median.
  """
  program, values, data = compile_training(
    config, dataset, hidden_size, batch_size, num_models, config.benchmark.dtype
  )

  def timed(steps: int) -> float:
    state = program.init(values)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    _, metrics = program.segment(state, values, data, jnp.int32(steps))
    jax.block_until_ready(metrics)
    return time.perf_counter() - t0

  timed(1)  # warm-up
  # Grow the timed stretch until it dwarfs the segment's fixed costs, whose
  # noise would otherwise dominate; on a machine busy with other work the
  # noise never settles, so a long segment of 20 x min_seconds is enough.
  while True:
    short, long = timed(steps), timed(2 * steps)
    fixed = max(2 * short - long, 0.0)
    enough = long - short >= max(min_seconds, 2 * fixed)
    if enough or long >= 20 * min_seconds or steps >= 2**12:
      break
    steps *= 2
  shorts, longs = [short], [long]
  for _ in range(repeats - 1):
    shorts.append(timed(steps))
    longs.append(timed(2 * steps))
  per_step = step_times(shorts, longs, steps)
  return TrainingTime(
    step_seconds=float(per_step.min()),
    step_seconds_median=float(np.median(per_step)),
    compile_seconds=program.compile_seconds,
    static=program.static,
  )


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Measures the peak, times every combination, writes `benchmark.json`.

  Args:
    config: a benchmark config (see `configs/benchmark.py`).
    workdir: output directory.

  Returns:
    The rows written.
  """
  if 'benchmark' not in config:
    raise UserError(
      '--mode=benchmark needs --config=configs/benchmark.py (a `benchmark` field)'
    )
  bench = config.benchmark
  _validate(bench)
  hparams.validate(config)
  workdir = workdir_lib.prepare(workdir)
  dataset = data_lib.from_config(config)
  dtype = bench.dtype
  with jax.default_matmul_precision(bench.matmul_precision):
    matmul_error = float32_matmul_error()
    logging.info(
      'A float32 matmul at this precision: relative error %.1e.', matmul_error
    )
    square_matmuls = []  # TFLOP/s of the square matmul, before each row and at the end
    rows = []
    combos = itertools.product(bench.hidden_sizes, bench.batch_sizes, bench.num_models)
    for hidden_size, batch_size, num_models in combos:
      square_matmuls.append(peak_tflops(bench.peak_matmul_size, dtype))
      logging.info(
        'Square %s matmul (%d^3): %.3f TFLOP/s.',
        dtype,
        bench.peak_matmul_size,
        square_matmuls[-1],
      )
      timing = time_training(
        config,
        dataset,
        hidden_size,
        batch_size,
        num_models,
        bench.steps,
        bench.repeats,
        bench.min_seconds,
      )
      step_seconds, static = timing.step_seconds, timing.static
      flops = flops_per_example(static.input_size, hidden_size, static.num_classes)
      examples = batch_size * num_models / step_seconds
      floor_seconds = matmul_floor_seconds(
        static.input_size,
        hidden_size,
        batch_size,
        num_models,
        dtype,
        bench.repeats,
        bench.min_seconds,
      )
      floor_flops = 4 * static.input_size * hidden_size * batch_size * num_models
      rows.append(
        {
          'backend': jax.default_backend(),
          'device_kind': jax.devices()[0].device_kind,
          'hidden_size': hidden_size,
          'batch_size': batch_size,
          'num_models': num_models,
          'step_seconds': step_seconds,
          'model_examples_per_second': examples,
          'achieved_tflops': flops * examples / 1e12,
          'step_seconds_median': timing.step_seconds_median,
          'compile_seconds': timing.compile_seconds,
          'floor_step_seconds': floor_seconds,
          'floor_tflops': floor_flops / floor_seconds / 1e12,
          'flops_per_example': flops,
          'dtype': dtype,
          'matmul_precision': bench.matmul_precision,
          'float32_matmul_relative_error': matmul_error,
          'float32_matmuls_use_tf32': _uses_tf32(dtype, matmul_error),
          'jax_version': jax.__version__,
        }
      )
      # No fraction of peak here: the peak is known only after the last row.
      logging.info(
        'H %d, batch %d, %s: %.3f ms/step (median %.3f), %.3f TFLOP/s; '
        "the first layer's matmuls alone %.3f TFLOP/s.",
        hidden_size,
        batch_size,
        plural(num_models, 'model'),
        1e3 * step_seconds,
        1e3 * timing.step_seconds_median,
        rows[-1]['achieved_tflops'],
        rows[-1]['floor_tflops'],
      )
    # Measured again at the end: the speed of a shared machine drifts, and a
    # low peak would flatter every fraction.
    square_matmuls.append(peak_tflops(bench.peak_matmul_size, dtype))
  peak = max(*square_matmuls, *(row['floor_tflops'] for row in rows))
  logging.info(
    'Square matmul again: %.3f TFLOP/s; peak (the fastest matmul of the run): %.3f.',
    square_matmuls[-1],
    peak,
  )
  for row in rows:
    row['peak_tflops_measured'] = peak
    row['peak_tflops_runs'] = square_matmuls
    row['fraction_of_peak'] = row['achieved_tflops'] / peak
    row['floor_fraction_of_peak'] = row['floor_tflops'] / peak
  workdir_lib.write_json(workdir / 'benchmark.json', rows)
  print(markdown(rows))
  return rows


def _validate(bench: ml_collections.ConfigDict) -> None:
  for field in ('hidden_sizes', 'batch_sizes', 'num_models'):
    values = bench[field]
    if not values or not all(isinstance(v, int) and v >= 1 for v in values):
      raise UserError(
        f'config.benchmark.{field}={values!r}: expected a tuple of integers >= 1'
      )
  for field in ('steps', 'repeats', 'peak_matmul_size'):
    if not isinstance(bench[field], int) or bench[field] < 1:
      raise UserError(
        f'config.benchmark.{field}={bench[field]!r}: expected an integer >= 1'
      )
  seconds = bench.min_seconds
  if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
    raise UserError(
      f'config.benchmark.min_seconds={seconds!r}: expected a number of seconds > 0'
    )
  if bench.dtype not in ('float32', 'bfloat16'):
    raise UserError(
      f"config.benchmark.dtype={bench.dtype!r}: expected 'float32' or 'bfloat16'"
    )
  if bench.matmul_precision not in (
    'default',
    'float32',
    'tensorfloat32',
    'bfloat16',
    'highest',
  ):
    raise UserError(
      f'config.benchmark.matmul_precision={bench.matmul_precision!r}: expected default, '
      'float32, tensorfloat32, bfloat16 or highest'
    )


def float32_matmul_error(size: int = 512, matmul: Callable = jnp.matmul) -> float:
  """Relative error of a float32 matmul at the current default precision.

  Against a float64 NumPy reference: about 1e-7 when the matmul really runs in
  float32, about 1e-4 with TF32 inputs (10-bit mantissa), about 1e-3 with
  bfloat16 passes. Measured rather than inferred from the device's name, since
  XLA's choice for the default precision differs between GPUs and versions.
  """
  key_a, key_b = jax.random.split(jax.random.key(1))
  a = jax.random.normal(key_a, (size, size), jnp.float32)
  b = jax.random.normal(key_b, (size, size), jnp.float32)
  product = np.asarray(jax.jit(matmul)(a, b), np.float64)
  reference = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
  return float(np.linalg.norm(product - reference) / np.linalg.norm(reference))


def _uses_tf32(dtype: str, error: float) -> bool | None:
  """Whether float32 matmuls run with TF32 inputs (a GPU's reduced precision).

  `None` off GPU or when the matmuls' inputs are not float32. An error above
  1e-5 is far beyond float32 rounding (1e-7) and at TF32's level or worse.
  """
  if jax.default_backend() != 'gpu' or dtype != 'float32':
    return None
  return error > 1e-5


def markdown(rows: list[dict]) -> str:
  """The rows as a Markdown table."""
  if not rows:
    return ''
  head = (
    '| H | batch | models | ms/step | model-examples/s | TFLOP/s | peak | of peak '
    '| median ms/step | matmuls alone | compile s |'
  )
  lines = [head, '|' + '---|' * 11]
  for r in rows:
    lines.append(
      f'| {r["hidden_size"]} | {r["batch_size"]} | {r["num_models"]} | '
      f'{1e3 * r["step_seconds"]:.3f} | {r["model_examples_per_second"]:,.0f} | '
      f'{r["achieved_tflops"]:.3f} | {r["peak_tflops_measured"]:.3f} | '
      f'{100 * r["fraction_of_peak"]:.1f}% | {1e3 * r["step_seconds_median"]:.3f} | '
      f'{100 * r["floor_fraction_of_peak"]:.1f}% | {r["compile_seconds"]:.2f} |'
    )
  first = rows[0]
  precision = f'matmul precision {first["matmul_precision"]}'
  if first['float32_matmuls_use_tf32'] is not None:
    tf32 = 'TF32' if first['float32_matmuls_use_tf32'] else 'full float32'
    precision += (
      f' (float32 matmuls run as {tf32}: relative error '
      f'{first["float32_matmul_relative_error"]:.1e})'
    )
  device = (
    f'{first["backend"]} ({first["device_kind"]}), {first["dtype"]}, {precision}, '
  )
  return f'{device}JAX {jax.__version__}\n' + '\n'.join(lines)
