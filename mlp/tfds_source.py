"""Reads a TFDS dataset prepared in array_record format, without TensorFlow.

`tfds.data_source` gives random access to the records; TFDS is imported only when
this source is used, because the import is slow.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlp.errors import UserError

if TYPE_CHECKING:
  from mlp.data import DatasetSpec

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load(spec: 'DatasetSpec', data_dir: str) -> Arrays:
  """Reads the train and test splits of a prepared TFDS dataset (array_record).

  Args:
    spec: the registry entry; its `tfds_name` names the TFDS dataset.
    data_dir: the TFDS data dir ('' = TFDS's default).

  Returns:
    train images (num_train, 784) uint8, train labels (num_train,) int32, test
    images (num_test, 784) uint8, test labels (num_test,) int32, in TFDS order.

  Raises:
    UserError: no TFDS counterpart, TFDS not importable, or absent or bad data.
  """
  if not spec.tfds_name:
    raise UserError(f'dataset {spec.name} has no TFDS counterpart; use source idx')
  if data_dir and not (Path(data_dir).expanduser() / spec.tfds_name).is_dir():
    problem = (
      'holds no' if Path(data_dir).expanduser().is_dir() else 'does not exist, so no'
    )
    raise UserError(
      f'TFDS data directory {data_dir} {problem} prepared {spec.tfds_name} folder;'
      f' point data_dir at the folder that holds {spec.tfds_name}/<version>/, or'
      f' use source idx'
    )
  try:
    import tensorflow_datasets as tfds  # Slow to import; only this source needs it.
  except Exception as e:  # Broken installs raise more than ImportError.
    raise UserError(
      f'source tfds needs tensorflow-datasets, array-record, pillow and'
      f' importlib-resources, but importing tensorflow_datasets failed'
      f' ({_one_line(e)}); run make install, or use source idx'
    ) from None
  where = data_dir or 'the default TFDS data directory'
  arrays = []
  for split, count in (('train', spec.num_train), ('test', spec.num_test)):
    try:
      source = tfds.data_source(
        spec.tfds_name, split=split, data_dir=data_dir or None, download=False
      )
    except Exception as e:  # TFDS raises many types for absent data.
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise UserError(
        f'cannot open the {split} split of TFDS dataset {spec.tfds_name} in'
        f' {where} ({type(e).__name__}: {first_line}); prepare it in array_record'
        f' format (tfds build --file_format=array_record), or use source idx'
      ) from None
    if len(source) != count:
      raise UserError(
        f'TFDS dataset {spec.tfds_name} in {where} has {len(source)} {split}'
        f' examples, expected {count}; re-prepare it, or use source idx'
      )
    arrays.extend(_read_tfds_split(source, spec, split, where))
  return tuple(arrays)


def _read_tfds_split(
  source: Sequence[dict[str, Any]], spec: 'DatasetSpec', split: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
  """All examples of a TFDS data source as images (N, 784) uint8, labels (N,) int32."""
  indices = list(range(len(source)))
  try:
    # Batch access reads the records in one call, faster than one at a time.
    if hasattr(source, '__getitems__'):
      records = source.__getitems__(indices)
    else:
      records = [source[index] for index in indices]
    images = np.stack([record['image'] for record in records])
    labels = np.array([record['label'] for record in records], dtype=np.int64)
  except Exception as e:  # Corrupt records fail inside decoders.
    raise UserError(
      f'cannot read the {split} split of TFDS dataset {spec.tfds_name} in {where}'
      f' ({type(e).__name__}: {_one_line(e)}); re-prepare it, or use source idx'
    ) from None
  rows, cols = spec.image_shape
  if images.dtype != np.uint8 or images.shape[1:] not in (
    (rows, cols),
    (rows, cols, 1),
  ):
    raise UserError(
      f'TFDS dataset {spec.tfds_name} in {where} has {split} images of shape'
      f' {images.shape[1:]} and dtype {images.dtype}, expected ({rows}, {cols}, 1)'
      f' uint8; re-prepare it, or use source idx'
    )
  if labels.size and not 0 <= labels.min() <= labels.max() < spec.num_classes:
    raise UserError(
      f'TFDS dataset {spec.tfds_name} in {where} has {split} labels outside'
      f' 0..{spec.num_classes - 1}; re-prepare it, or use source idx'
    )
  return images.reshape(len(images), rows * cols), labels.astype(np.int32)


def _one_line(error: BaseException) -> str:
  return ' '.join(str(error).split())
