"""TensorBoard event files of a workdir, written with tensorboardX's protos.

Train writes `WORKDIR/tensorboard/`: `train_loss`, `train_accuracy`,
`val_accuracy` and `learning_rate` at each evaluation, under the names and
steps of `metrics.jsonl`. A sweep writes one run per model,
`WORKDIR/tensorboard/model_NNNN/` (its curves, its HParams session, and
`test_accuracy` for the best model), and the HParams experiment in
`WORKDIR/tensorboard/` itself; `tensorboard --logdir WORKDIR` shows them.

Every event is appended to the run's event file as soon as it is known, so a
live run can be watched. A resumed process starts a new event file and writes
only the steps beyond those already recorded in the run (it reads them back
first), so a run resumed after a kill neither repeats nor goes back in steps.
`RunWriter` opens its file only while appending: a sweep chunk of thousands of
models holds no file handles and no writer threads between evaluations.

tensorboardX is imported when the first event is written, not on start-up.
"""

import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mlp import workdir as workdir_lib

DIRNAME = 'tensorboard'
SCALARS = ('train_loss', 'train_accuracy', 'val_accuracy', 'learning_rate')
# HParams metrics: the tags of each model's run the dashboard shows.
METRICS = ('val_accuracy', 'test_accuracy', 'train_accuracy', 'train_loss')

_HPARAMS_PLUGIN = 'hparams'
_FILE_NUMBERS = itertools.count()  # new event files of this process, in order
EXPERIMENT_TAG = '_hparams_/experiment'
SESSION_START_TAG = '_hparams_/session_start_info'
SESSION_END_TAG = '_hparams_/session_end_info'


def model_run(index: int) -> str:
  """The run directory name of a sweep's model `index` (0-based grid order)."""
  return f'model_{index:04d}'


def _records(path: Path) -> Iterator[bytes]:
  """The TFRecord payloads of an event file up to the first torn or damaged
  one (a checksum that does not match), where TensorBoard stops reading too."""
  from tensorboardX.record_writer import masked_crc32c

  data = path.read_bytes()
  position = 0
  while position + 12 <= len(data):
    header = data[position : position + 8]
    (length,) = struct.unpack('<Q', header)
    end = position + 12 + length + 4
    if end > len(data):
      return
    payload = data[position + 12 : position + 12 + length]
    if struct.unpack('<I', data[position + 8 : position + 12])[0] != masked_crc32c(
      header
    ) or struct.unpack('<I', data[end - 4 : end])[0] != masked_crc32c(payload):
      return
    yield payload
    position = end


def recorded_steps(directory: Path) -> dict[str, int]:
  """The largest step of each summary tag already in `directory`'s event files."""
  if not directory.is_dir():
    return {}
  from google.protobuf.message import DecodeError
  from tensorboardX.proto import event_pb2

  steps: dict[str, int] = {}
  for path in sorted(directory.glob('events.out.tfevents.*')):
    for record in _records(path):
      try:
        event = event_pb2.Event.FromString(record)
      except DecodeError:
        break  # a damaged record: TensorBoard stops reading the file there too
      for value in event.summary.value:
        steps[value.tag] = max(steps.get(value.tag, -1), event.step)
  return steps


def _frame(payload: bytes) -> bytes:
  from tensorboardX.record_writer import masked_crc32c

  header = struct.pack('<Q', len(payload))
  return (
    header
    + struct.pack('<I', masked_crc32c(header))
    + payload
    + struct.pack('<I', masked_crc32c(payload))
  )


class RunWriter:
  """Appends events to one TensorBoard run, never a step it already holds."""

  def __init__(self, directory: Path):
    self.directory = Path(directory)
    self.recorded = recorded_steps(self.directory)
    self._path: Path | None = None

  def _append(self, events: list) -> None:
    from tensorboardX.proto import event_pb2

    if not events:
      return
    if self._path is None:
      try:
        self.directory.mkdir(parents=True, exist_ok=True)
      except OSError as e:
        raise workdir_lib.WriteError(self.directory, e) from None
      now = time.time()
      self._path = self.directory / (
        f'events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.'
        f'{next(_FILE_NUMBERS):06d}'
      )
      events = [event_pb2.Event(wall_time=now, file_version='brain.Event:2'), *events]
    workdir_lib.note_written(self._path)
    try:  # a record cut short by a full disk is skipped when read back
      with open(self._path, 'ab') as f:
        f.write(b''.join(_frame(e.SerializeToString()) for e in events))
    except OSError as e:
      raise workdir_lib.WriteError(self._path, e) from None
    for event in events:
      for value in event.summary.value:
        self.recorded[value.tag] = max(self.recorded.get(value.tag, -1), event.step)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    """Writes `values` at `step`, except tags already recorded at `step` or later."""
    from tensorboardX.proto import event_pb2, summary_pb2

    fresh = [
      summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
      for tag, value in values.items()
      if self.recorded.get(tag, -1) < step
    ]
    if fresh:
      self._append(
        [
          event_pb2.Event(
            wall_time=time.time(),
            step=int(step),
            summary=summary_pb2.Summary(value=fresh),
          )
        ]
      )

  def backfill(self, rows: Sequence[Mapping]) -> None:
    """Writes the `SCALARS` of each evaluation in `rows` (as `metrics.jsonl`
    holds them, in step order) that the run's events lack: those a damaged
    event file lost, which TensorBoard would otherwise show as a gap."""
    recorded = min((self.recorded.get(tag, -1) for tag in SCALARS), default=-1)
    for row in rows:
      if row['step'] > recorded:
        self.scalars(row['step'], {tag: row[tag] for tag in SCALARS})

  def plugin_summary(self, tag: str, plugin: str, content: bytes) -> None:
    """Writes a plugin's summary once: nothing if the run already holds `tag`."""
    from tensorboardX.proto import event_pb2, summary_pb2

    if tag in self.recorded:
      return
    metadata = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name=plugin, content=content
      )
    )
    value = summary_pb2.Summary.Value(tag=tag, metadata=metadata)
    self._append(
      [
        event_pb2.Event(
          wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=[value])
        )
      ]
    )


def _hparam_value(value):
  from google.protobuf import struct_pb2

  if isinstance(value, str):
    return struct_pb2.Value(string_value=value)
  if isinstance(value, bool):
    return struct_pb2.Value(bool_value=value)
  return struct_pb2.Value(number_value=float(value))


def write_experiment(
  writer: RunWriter, keys: Sequence[str], configs: Sequence[Mapping], name: str
) -> None:
  """The HParams experiment: `keys` with the values `configs` take, and `METRICS`.

  Args:
    writer: the run at the top of the sweep's event directory.
    keys: the hyperparameters every model declares (`hparams.in_effect`).
    configs: every model's config.
    name: the experiment's name (the workdir's).
  """
  from google.protobuf import struct_pb2
  from tensorboardX.proto import api_pb2, plugin_hparams_pb2

  infos = []
  for key in keys:
    values = sorted({c[key] for c in configs}, key=lambda v: (str(type(v)), v))
    kind = 'DATA_TYPE_STRING' if isinstance(values[0], str) else 'DATA_TYPE_FLOAT64'
    info = api_pb2.HParamInfo(
      name=key,
      type=api_pb2.DataType.Value(kind),
      domain_discrete=struct_pb2.ListValue(values=[_hparam_value(v) for v in values]),
    )
    if len(values) > 1:
      # `differs = true` (field 7 of TensorBoard's HParamInfo, which
      # tensorboardX's copy of the proto lacks): the dashboard shows the
      # hyperparameters that differ first.
      info = api_pb2.HParamInfo.FromString(info.SerializeToString() + b'\x38\x01')
    infos.append(info)
  datasets = {
    'val_accuracy': 'DATASET_VALIDATION',
    'train_accuracy': 'DATASET_TRAINING',
    'train_loss': 'DATASET_TRAINING',
  }
  metrics = [
    api_pb2.MetricInfo(
      name=api_pb2.MetricName(tag=tag),
      display_name=tag,
      dataset_type=api_pb2.DatasetType.Value(datasets.get(tag, 'DATASET_UNKNOWN')),
    )
    for tag in METRICS
  ]
  experiment = api_pb2.Experiment(name=name, hparam_infos=infos, metric_infos=metrics)
  content = plugin_hparams_pb2.HParamsPluginData(version=0, experiment=experiment)
  writer.plugin_summary(EXPERIMENT_TAG, _HPARAMS_PLUGIN, content.SerializeToString())


def write_session_start(
  writer: RunWriter, values: Mapping[str, object], group: str
) -> None:
  """A model's HParams session: its hyperparameter values; `group` gathers
  the sessions the dashboard aggregates (a configuration's seeds)."""
  from tensorboardX.proto import plugin_hparams_pb2

  start = plugin_hparams_pb2.SessionStartInfo(
    group_name=group, start_time_secs=time.time()
  )
  for key, value in values.items():
    start.hparams[key].CopyFrom(_hparam_value(value))
  content = plugin_hparams_pb2.HParamsPluginData(version=0, session_start_info=start)
  writer.plugin_summary(SESSION_START_TAG, _HPARAMS_PLUGIN, content.SerializeToString())


def write_session_end(writer: RunWriter, diverged: bool) -> None:
  """Closes a model's HParams session: success, or failure if it diverged."""
  from tensorboardX.proto import api_pb2, plugin_hparams_pb2

  status = 'STATUS_FAILURE' if diverged else 'STATUS_SUCCESS'
  end = plugin_hparams_pb2.SessionEndInfo(
    status=api_pb2.Status.Value(status), end_time_secs=time.time()
  )
  content = plugin_hparams_pb2.HParamsPluginData(version=0, session_end_info=end)
  writer.plugin_summary(SESSION_END_TAG, _HPARAMS_PLUGIN, content.SerializeToString())


class SweepEvents:
  """A sweep's event directory: the experiment, then one run per model.

  Attributes:
    directory: `WORKDIR/tensorboard`.
    configs: every model's config, in grid order (a list), or by model index.
    keys: the hyperparameters every model declares.
    group_by: the fields whose values name a model's session group (all keys
      but `seed` when seeds are swept, so that the dashboard shows a
      configuration's seeds as one group; empty otherwise: one group a model).
  """

  def __init__(
    self,
    directory: Path,
    configs: Sequence[Mapping] | Mapping[int, Mapping],
    keys: Sequence[str],
    group_by: Sequence[str] = (),
  ):
    self.directory = Path(directory)
    self.configs = configs if isinstance(configs, Mapping) else dict(enumerate(configs))
    self.keys = tuple(keys)
    self.group_by = tuple(group_by)
    self._runs: dict[int, RunWriter] = {}
    write_experiment(
      RunWriter(self.directory),
      self.keys,
      list(self.configs.values()),
      self.directory.parent.name,
    )

  def run(self, index: int) -> RunWriter:
    """Model `index`'s run (its HParams session starts when first asked for)."""
    if index not in self._runs:
      config = self.configs[index]
      writer = RunWriter(self.directory / model_run(index))
      group = ' '.join(f'{k}={config[k]}' for k in self.group_by)
      write_session_start(writer, {k: config[k] for k in self.keys}, group)
      self._runs[index] = writer
    return self._runs[index]

  def evaluation(self, indices: Sequence[int], metrics: Mapping[str, list]) -> None:
    """One evaluation of a chunk: `metrics[name][i]` belongs to `indices[i]`."""
    for i, index in enumerate(indices):
      self.run(index).scalars(
        metrics['step'][i], {tag: metrics[tag][i] for tag in SCALARS}
      )

  def finish(
    self, diverged: Mapping[int, bool], best: tuple[int, int, float] | None
  ) -> None:
    """Ends every model's session; `best` is `(index, step, test_accuracy)`."""
    for index, failed in diverged.items():
      write_session_end(self.run(index), failed)
    if best is not None:
      index, step, test_accuracy = best
      self.run(index).scalars(step, {'test_accuracy': test_accuracy})
