"""`--mode=eval`: val and test accuracy of the params saved in a workdir.

A train workdir's `params.npz`, or a sweep workdir's `best_params.npz`,
evaluated on the dataset of the workdir's `config.json` (or of `--config`).
"""

import ml_collections

from mlp import data, evaluation, model
from mlp import workdir as workdir_lib
from mlp.errors import UserError


def run(config: ml_collections.ConfigDict | None, workdir: str) -> dict:
  """Evaluates the saved params of `workdir` and prints the accuracies.

  Args:
    config: the config to take the dataset from; `None` reads the workdir's
      `config.json`.
    workdir: a directory written by `--mode=train` or `--mode=sweep`.

  Returns:
    `{'val_accuracy', 'test_accuracy', 'hidden_size', 'params'}` (`params`:
    the file evaluated).
  """
  workdir = workdir_lib.existing(
    workdir, f'train first with --mode=train --workdir={workdir}'
  )
  path = workdir_lib.params_path(workdir)
  params = workdir_lib.load_finite_params(path)
  if config is None:
    config_path = workdir / 'config.json'
    if not config_path.is_file():
      raise UserError(f'no config.json in {workdir}: pass --config=configs/NAME.py')
    config = ml_collections.ConfigDict(
      workdir_lib.read_json(config_path, fix='pass --config=configs/NAME.py')
    )
    source = str(config_path)
  else:
    source = 'the --config file'
  if lacking := [name for name in data.CONFIG_FIELDS if name not in config]:
    raise UserError(
      f'{source} lacks the field(s) {", ".join(lacking)}: pass '
      '--config=configs/NAME.py, a config that starts from configs/default.py'
    )
  dataset = data.from_config(config)
  problem = model.shape_problem(
    params, dataset.train_images.shape[1], dataset.num_classes
  )
  if problem:
    raise UserError(
      f'params in {path} do not fit {config.dataset} ({problem}): train again with '
      '--mode=train'
    )
  outcome = evaluation.evaluate(
    params,
    {
      'val': (dataset.val_images, dataset.val_labels),
      'test': (dataset.test_images, dataset.test_labels),
    },
  )
  result = {
    'params': str(path),
    'hidden_size': int(params['W1'].shape[1]),
    'val_accuracy': outcome.accuracy('val'),
    'test_accuracy': outcome.accuracy('test'),
  }
  print(
    f'val_accuracy {result["val_accuracy"]:.4f}  '
    f'test_accuracy {result["test_accuracy"]:.4f}  ({path.name})'
  )
  return result
