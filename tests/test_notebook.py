"""The learner's notebook, `notebooks/two_layer_net.ipynb`: it runs top to
bottom (quick mode) with the results it teaches, and its committed outputs
come from its committed code."""

import importlib.util
import json
import os

import nbformat

from tests.conftest import REPO

NOTEBOOK = REPO / 'notebooks' / 'two_layer_net.ipynb'
TAG = 'NOTEBOOK_RESULTS '
# Run after the notebook's own cells, in its kernel: what the tests check.
INSPECT = f"""
import json
print({TAG!r} + json.dumps({{
  'backend': jax.default_backend(),
  'quick': QUICK,
  'first_predicted_classes': first_predicted_classes,
  'grad_relative_error': grad_relative_error,
  'sweep_rows': sweep_rows,
}}))
"""

# XLA:CPU compiles the notebook's programs (five, one a few seconds) in about
# a third of the time without its backend optimizations; nothing below reads a
# timing or an exact value.
FAST_COMPILE = (
  '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
)


def _execute_module():
  """`notebooks/execute.py`, which `make notebook` runs (not a package)."""
  spec = importlib.util.spec_from_file_location(
    'notebook_execute', REPO / 'notebooks' / 'execute.py'
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


execute = _execute_module()


def test_the_committed_outputs_come_from_the_committed_code():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  recorded = notebook.metadata['mlp']
  assert recorded['source_sha256'] == execute.source_hash(notebook), (
    'the code cells changed since `make notebook` ran: run it again'
  )
  assert recorded['quick'] is False  # the outputs of a full run
  cells = [c for c in notebook.cells if c.cell_type == 'code']
  assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
  assert not [o for c in cells for o in c.outputs if o.output_type == 'error']
  assert NOTEBOOK.stat().st_size < 2_000_000


def test_the_hash_covers_the_code_cells_and_only_them():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  before = execute.source_hash(notebook)
  markdown = next(c for c in notebook.cells if c.cell_type == 'markdown')
  markdown.source += '\nmore words'
  assert execute.source_hash(notebook) == before
  code = [c for c in notebook.cells if c.cell_type == 'code'][-1]
  code.source += '\nprint()'
  assert execute.source_hash(notebook) != before


def test_the_notebook_runs_in_quick_mode(tmp_path):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  notebook.cells.append(nbformat.v4.new_code_cell(INSPECT))
  xla_flags = f'{os.environ.get("XLA_FLAGS", "")} {FAST_COMPILE}'.strip()
  execute.execute(
    notebook, quick=True, runs=tmp_path / 'runs', env={'XLA_FLAGS': xla_flags}
  )
  (line,) = [
    line
    for output in notebook.cells[-1].outputs
    if output.output_type == 'stream'
    for line in output.text.splitlines()
    if line.startswith(TAG)
  ]
  results = json.loads(line[len(TAG) :])
  assert results['backend'] == 'cpu' and results['quick'] is True
  # The course's first configuration: every image gets one class.
  assert len(results['first_predicted_classes']) == 1
  assert results['grad_relative_error'] < 1e-6
  assert results['sweep_rows'] == 36
  assert (tmp_path / 'runs' / 'sweep' / 'results.csv').is_file()
