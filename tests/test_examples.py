"""The examples of other models, each searched through the public API on
tiny shapes: they run, write the workdir's files, and return their model's
own params, whose test accuracy is the summary's."""

import importlib.util
import json

import jax
import numpy as np
import pytest

from mlp import data, loop
from tests.conftest import REPO


def example(name: str):
  """`examples/NAME.py` as a module (examples are scripts, not a package)."""
  spec = importlib.util.spec_from_file_location(name, REPO / 'examples' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def check_search(result, model, num_models: int, shape: tuple[int, ...]):
  """The workdir's files and the result agree, and the best params are the
  model's own: its accuracy on the test split (inputs of `shape`) is the
  summary's."""
  workdir = result.workdir
  for name in ('results.csv', 'results.md', 'curves.jsonl', 'best_params.npz'):
    assert (workdir / name).is_file(), name
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['num_models'] == num_models == len(result.members)
  assert len(result.table) == num_models
  assert result.table[0]['val_accuracy'] == max(r['val_accuracy'] for r in result.table)
  test = summary['best']['test_accuracy']
  mnist = data.load_dataset('mnist')
  images = mnist.test_images[:256].reshape(-1, *shape)
  split = (images, mnist.test_labels[:256])
  static = loop.static_for(
    [result.members[0].config], data.from_arrays(split, split, split), model=model
  )
  accuracy = model.accuracy(
    result.best_params, data.scale_images(images), split[1], static
  )
  assert float(accuracy) == pytest.approx(test, abs=1e-6)
  with np.load(workdir / 'best_params.npz') as saved:
    assert len(saved.files) == len(jax.tree.leaves(result.best_params))


def test_the_cnn_example_searches_with_hyperband(tmp_path):
  cnn = example('cnn')
  result = cnn.main(str(tmp_path / 'cnn'), tiny=True)
  check_search(result, cnn.CNN, 5, (28, 28, 1))
  assert {r['bracket'] for r in result.table} == {0, 1}
  assert sorted(r['steps'] for r in result.table) == [3, 3, 9, 9, 9]


def test_the_equinox_example_searches_a_partitioned_module(tmp_path):
  import equinox as eqx

  equinox_mlp = example('equinox_mlp')
  result = equinox_mlp.main(str(tmp_path / 'equinox'), tiny=True)
  check_search(result, equinox_mlp.EQUINOX_MLP, 2, (784,))
  assert isinstance(result.best_params, eqx.nn.MLP)  # its own pytree, arrays only


def test_the_readmes_own_model_runs_as_written(tmp_path, monkeypatch, capsys):
  """The README's "Use it on your own model" code, executed as it is there."""
  readme = (REPO / 'README.md').read_text()
  section = readme.split('## Use it on your own model', 1)[1]
  code = section.split('```python\n', 1)[1].split('```', 1)[0]
  monkeypatch.chdir(tmp_path)
  namespace = {'__name__': 'readme'}
  exec(compile(code, 'README.md', 'exec'), namespace)  # noqa: S102
  result, picked = namespace['result'], namespace['picked']
  assert len(result.table) == 8 and picked['steps'] == 600  # halving's last rung
  assert picked['val_accuracy'] > 0.9  # softmax regression on MNIST: about 0.92
  assert {r['l1_reg'] for r in result.table} <= {0.0, 1e-5, 1e-4}
  assert (tmp_path / 'runs/softmax/results.csv').is_file()
  assert str(picked['val_accuracy']) in capsys.readouterr().out
