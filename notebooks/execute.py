"""Executes the notebook with nbclient and records which code produced its outputs.

  python notebooks/execute.py            # `make notebook`: the full run, in place
  python notebooks/execute.py --quick --output=/tmp/quick.ipynb

The full run writes the outputs into `notebooks/two_layer_net.ipynb` and
records the sha256 of its code cells' sources in its metadata
(`metadata.mlp.source_sha256`), so that a test can tell, without running
anything, whether the committed outputs came from the committed code.
`tests/test_notebook.py` executes it in quick mode with the same `execute`.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parent / 'two_layer_net.ipynb'
QUICK_VARIABLE = 'MLP_NOTEBOOK_QUICK'  # read by the notebook's setup cell
RUNS_VARIABLE = 'MLP_NOTEBOOK_RUNS'  # where its workdirs go (default runs/notebook/)


def source_hash(notebook: nbformat.NotebookNode) -> str:
  """The sha256 of the notebook's code cells' sources, in order."""
  sources = [cell.source for cell in notebook.cells if cell.cell_type == 'code']
  return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def execute(
  notebook: nbformat.NotebookNode,
  quick: bool,
  runs: str | Path | None = None,
  env: dict | None = None,
  cell_timeout: int = 900,
) -> nbformat.NotebookNode:
  """Runs every cell of `notebook` in a fresh `python3` kernel, in place.

  Args:
    notebook: the notebook; its outputs are replaced.
    quick: shrink every training run (the notebook reads `MLP_NOTEBOOK_QUICK`).
    runs: the folder of the notebook's workdirs (default: `runs/notebook/`).
    env: more environment variables of the kernel (beside this process's).
    cell_timeout: seconds one cell may take.

  Returns:
    `notebook`, executed, with `metadata.mlp` recording the code's hash and
    the mode.

  Raises:
    nbclient.exceptions.CellExecutionError: a cell failed.
  """
  env = {**os.environ, **(env or {}), QUICK_VARIABLE: '1' if quick else '0'}
  if runs is not None:
    env[RUNS_VARIABLE] = str(runs)
  client = nbclient.NotebookClient(
    notebook,
    kernel_name='python3',  # ipykernel's own spec: the interpreter running this
    timeout=cell_timeout,
    resources={'metadata': {'path': str(NOTEBOOK.parent)}},
  )
  client.execute(env=env)
  notebook.metadata['mlp'] = {'source_sha256': source_hash(notebook), 'quick': quick}
  return notebook


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='shrink every training run')
  parser.add_argument('--output', type=Path, default=NOTEBOOK, help='where to write it')
  args = parser.parse_args()
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  try:
    execute(notebook, args.quick)
  except nbclient.exceptions.CellExecutionError as e:
    print(f'Error: a cell of {NOTEBOOK.name} failed: {e}', file=sys.stderr)
    return 1
  nbformat.write(notebook, args.output)
  print(f'Wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
