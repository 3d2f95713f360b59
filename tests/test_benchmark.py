"""--mode=benchmark on a tiny config, and its FLOP count by hand."""

import json
import re

import numpy as np
import pytest

from mlp.modes import benchmark


def test_flops_per_example_by_hand():
  # forward 2*784*300 + 2*300*10, backward 2*784*300 + 4*300*10
  assert benchmark.flops_per_example(784, 300, 10) == 470_400 + 6_000 + 470_400 + 12_000
  assert benchmark.flops_per_example(4, 10, 3) == 80 + 60 + 80 + 120


@pytest.mark.xdist_group('benchmark')
def test_benchmark_mode_writes_the_contract_rows(benchmark_workdir):
  tmp_path, result = benchmark_workdir
  rows = json.loads((tmp_path / 'benchmark.json').read_text())
  assert [r['num_models'] for r in rows] == [1, 3]
  for row in rows:
    assert set(benchmark.COLUMNS) | set(benchmark.FLOOR_COLUMNS) <= set(row)
    assert row['floor_step_seconds'] > 0 and row['floor_fraction_of_peak'] > 0
    # One peak: the fastest matmul of the run, so no matmul loop is above it.
    floors = [r['floor_tflops'] for r in rows]
    assert row['peak_tflops_measured'] == max(*row['peak_tflops_runs'], *floors)
    assert row['floor_fraction_of_peak'] <= 1
    assert row['step_seconds'] <= row['step_seconds_median']
    assert (
      row['backend'] == 'cpu' and row['hidden_size'] == 16 and row['batch_size'] == 32
    )
    assert row['step_seconds'] > 0 and row['peak_tflops_measured'] > 0
    assert row['step_seconds_median'] > 0
    expected = benchmark.flops_per_example(784, 16, 10) * 32 * row['num_models']
    assert (
      abs(row['achieved_tflops'] * 1e12 * row['step_seconds'] - expected)
      < 1e-3 * expected
    )
    assert (
      row['fraction_of_peak'] == row['achieved_tflops'] / row['peak_tflops_measured']
    )
    assert row['float32_matmul_relative_error'] < 1e-5  # XLA:CPU: full float32
    assert row['float32_matmuls_use_tf32'] is None  # only reported on a GPU
  # --verbose: absl's full prefix (level and date, time, thread, file:line).
  assert re.search(
    r'^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ benchmark\.py:\d+\] ', result.stderr, re.M
  )
  assert '| H | batch | models |' in result.stdout
  assert 'matmul precision default' in result.stdout


def test_step_times_take_the_fixed_cost_out_of_each_long_segment():
  # fixed = 2 * 1.0 - 1.5 = 0.5; long runs: (1.5 - 0.5) / 20, (1.9 - 0.5) / 20.
  per_step = benchmark.step_times([1.0, 1.2], [1.5, 1.9], steps=10)
  np.testing.assert_allclose(per_step, [0.05, 0.07])
  assert per_step.min() == pytest.approx((1.5 - 1.0) / 10)
  # Short runs no faster than long ones (noise): no fixed cost is taken out.
  np.testing.assert_allclose(benchmark.step_times([1.0], [0.9], steps=10), [0.045])


def test_the_full_benchmark_is_a_named_variant():
  from configs import benchmark as benchmark_config

  default, full = benchmark_config.get_config(), benchmark_config.get_config('full')
  assert len(default.benchmark.hidden_sizes) * len(default.benchmark.batch_sizes) == 1
  assert full.benchmark.hidden_sizes == (300, 1024)
  assert full.benchmark.batch_sizes == (200, 1000)
  with pytest.raises(ValueError, match='configs/benchmark.py:full'):
    benchmark_config.get_config('small')


def test_float32_matmul_error_tells_reduced_precision_apart():
  import jax.numpy as jnp

  assert benchmark.float32_matmul_error(64) < 1e-5  # XLA:CPU: full float32

  def bfloat16_inputs(a, b):
    return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)).astype(a.dtype)

  assert benchmark.float32_matmul_error(64, bfloat16_inputs) > 1e-5
