"""The package's layers point down: modes, search, loop, step, models, then
model.

Read from the source's imports (`ast`), so a new import that points up, or a
mode that imports another mode, fails here. And start-up stays cheap: what
`main.py --help` and `--mode=train` import, read from `sys.modules` of a fresh
interpreter.
"""

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO, child_env

MLP = REPO / 'mlp'
# Each layer may import the layers listed after it, never one before it.
# `models` is the form any model takes for the engine; `model` is the MLP's math.
LAYERS = ('modes', 'search', 'loop', 'step', 'models', 'model')
# Helpers of several modes (accuracy over a split, the model axis, pictures and
# tables of results, the classifier of predict and serve, and serve's server
# that uses it) may also use the step and the model, but not the search or the
# loop.
HELPERS = (
  'classifier',
  'web',
  'evaluation',
  'model_axis',
  'resources',
  'plots',
  'sweep_plots',
  'report',
  'results',
)
# Everything else (data, hyperparameters, checkpoints, workdir files, ...) is
# below all of them and imports none.


def layer(module: str) -> str | None:
  """The layer of `mlp.X...` (one of `LAYERS`), else None (below them)."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def mlp_imports(path) -> set[str]:
  """Every `mlp.X[.Y]` module that the file at `path` imports."""
  imported = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      imported |= {a.name for a in node.names if a.name.startswith('mlp')}
    elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('mlp'):
      if node.module == 'mlp':
        imported |= {f'mlp.{a.name}' for a in node.names}
      else:
        imported |= {node.module} | {f'{node.module}.{a.name}' for a in node.names}
  return imported


MODULES = {
  'mlp.'
  + '.'.join(p.relative_to(MLP).with_suffix('').parts).removesuffix('.__init__'): p
  for p in MLP.rglob('*.py')
}


@pytest.mark.parametrize('module', sorted(MODULES))
def test_imports_point_down(module):
  own = layer(module)
  rank = {name: i for i, name in enumerate(LAYERS)}
  for imported in mlp_imports(MODULES[module]):
    if imported not in MODULES:  # a name inside a module, e.g. mlp.hparams.X
      continue
    target = layer(imported)
    if own is None and module.split('.')[1] in HELPERS:
      assert target not in ('modes', 'search', 'loop'), (
        f'{module} (a helper) imports {imported}'
      )
    elif own is None:  # below every layer: imports none of them
      assert target is None, f'{module} (below the layers) imports {imported}'
    elif target is not None:
      assert rank[target] >= rank[own], f'{module} imports {imported}, a layer up'


def test_no_mode_imports_another():
  for module, path in MODULES.items():
    if module.startswith('mlp.modes.'):
      others = {m for m in mlp_imports(path) if m.startswith('mlp.modes')}
      assert not others, f'{module} imports {others}'


def test_the_layers_are_where_the_design_says():
  assert {'mlp.modes.train', 'mlp.modes.sweep', 'mlp.modes.eval'} <= set(MODULES)
  assert {'mlp.modes.predict', 'mlp.modes.benchmark', 'mlp.loop'} <= set(MODULES)
  assert {'mlp.step.core', 'mlp.step.blocked', 'mlp.step.tall', 'mlp.model'} <= set(
    MODULES
  )
  assert 'mlp.models' in MODULES


# What `main.py --mode=train` must not import before it uses it (a run with
# plots imports the plots' modules in a background thread, only then).
NOT_FOR_TRAINING = (
  'matplotlib',
  'PIL',
  'tensorflow_datasets',
  'tensorflow',
  'jax.experimental.multihost_utils',
  'mlp.plots',
  'mlp.sweep_plots',
  'mlp.modes.benchmark',
  'mlp.modes.predict',
  'mlp.modes.sweep',
  'mlp.modes.eval',
)
HELP_IMPORTS = """
import runpy, sys
sys.argv = ['main.py', '--help']
try:
  runpy.run_path('main.py', run_name='__main__')
finally:
  print(' '.join(sorted(sys.modules)), file=sys.stderr)
"""
TRAIN_IMPORTS = """
import sys
sys.argv = ['main.py']
import main
from mlp import distributed
from mlp.modes import train
print(' '.join(sorted(sys.modules)))
"""


def modules_imported_by(code: str) -> tuple[set[str], str]:
  """The modules a fresh interpreter holds after `code`, and what it printed."""
  result = subprocess.run(
    [sys.executable, '-c', code],
    cwd=REPO,
    capture_output=True,
    text=True,
    env=child_env(),
    timeout=120,
  )
  names = (result.stdout if 'train' in code else result.stderr).splitlines()[-1]
  return set(names.split()), result.stdout


def test_help_imports_no_jax_and_train_mode_imports_only_what_it_needs():
  loaded, printed = modules_imported_by(HELP_IMPORTS)
  assert '--mode' in printed and 'mlp.cli' in loaded
  assert 'jax' not in loaded  # --help stays fast
  loaded, _ = modules_imported_by(TRAIN_IMPORTS)
  assert {'jax', 'optax', 'mlp.loop', 'mlp.modes.train'} <= loaded
  for name in NOT_FOR_TRAINING:
    found = sorted(m for m in loaded if m == name or m.startswith(name + '.'))
    assert not found, f'--mode=train imports {found[:3]} before using it'
