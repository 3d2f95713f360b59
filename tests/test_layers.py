"""The package's layers point down: modes, then loop, then step, then model.

Read from the source's imports (`ast`), so a new import that points up, or a
mode that imports another mode, fails here.
"""

import ast

import pytest

from tests.conftest import REPO

MLP = REPO / 'mlp'
# Each layer may import the layers listed after it, never one before it.
LAYERS = ('modes', 'loop', 'step', 'model')
# Helpers of several modes (accuracy over a split, the model axis, pictures and
# tables of results) may also use the step and the model, but not the loop.
HELPERS = (
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
  """'modes', 'loop', 'step' or 'model' for `mlp.X...`, else None (below)."""
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
      assert target not in ('modes', 'loop'), f'{module} (a helper) imports {imported}'
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
