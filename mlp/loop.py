"""The one training loop: segments, evaluation, progress, checkpoints, resume.

Training runs in segments, one per evaluation. `train_segment` is the compiled
part: the steps up to the next evaluation inside one `lax` loop (by the path
`step.choose` picks), then accuracy on the training subset and on val.
`Trainer.train` is the Python part, the same for `--mode=train` (one model)
and `--mode=sweep` (a model axis): after every segment it logs a progress
line, hands the metrics to the mode, saves a checkpoint, and stops a single
model whose loss stopped being finite. A run is a sequence of jobs (train: one
model; sweep: one chunk of models after another); a checkpoint holds the job
in progress (its state and its evaluations so far) and what the finished jobs
left, so the same command resumes where a killed run stopped.
"""

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlp import augment, checkpoint, distributed, model, model_axis, step
from mlp import hparams as hparams_lib
from mlp.data import Dataset, scale_images
from mlp.errors import UserError
from mlp.hparams import Hyperparams
from mlp.progress import Progress
from mlp.step import core, xla_options


def evaluate(params: model.Params, data: core.DeviceData, static: core.Static) -> dict:
  """Accuracy on the first `train_eval_size` training images and on val."""
  n = static.train_eval_size
  return {
    'train_accuracy': model.accuracy(
      params,
      scale_images(data.train_images[:n]),
      data.train_labels[:n],
      static.compute_dtype,
    ),
    'val_accuracy': model.accuracy(
      params, scale_images(data.val_images), data.val_labels, static.compute_dtype
    ),
  }


def train_segment(
  state: core.TrainState,
  hparams: Hyperparams,
  data: core.DeviceData,
  end_step: jax.Array,
  *,
  static: core.Static,
  hparam_axes: Hyperparams | None = None,
) -> tuple[core.TrainState, dict]:
  """The steps from `state.step` to `end_step`, then an evaluation.

  Args:
    state: where training stands.
    hparams: one model's hyperparameters; or, with `hparam_axes`, many models'
      stacked along a model axis.
    data: the device-resident splits.
    end_step: int32 scalar, the step to stop at (exclusive), at most `max_iters`.
    static: shapes and structure.
    hparam_axes: `None` for one model; else the model axis of each field of
      `hparams` (`None`: shared). The state is then model axis first
      (`core.STATE_AXES`), and the step is vmapped inside the loop.

  Returns:
    The new state, and the metrics at `end_step` (per model with
    `hparam_axes`): `step`, `train_loss` (mean mini-batch loss of the
    segment), `learning_rate` (of its last step), `train_accuracy` (on the
    training subset) and `val_accuracy`.
  """
  path = step.choose(static, hparam_axes)
  state, loss_sum, count = path.run_steps(
    state, hparams, data, static, end_step, hparam_axes
  )
  train_loss = jnp.where(count > 0, loss_sum / jnp.maximum(count, 1), state.train_loss)
  state = state._replace(train_loss=train_loss)
  evaluate_fn = functools.partial(evaluate, static=static)
  if hparam_axes is not None:
    evaluate_fn = jax.vmap(evaluate_fn, in_axes=(0, None))
  steps_done = jnp.minimum(state.step, hparams.num_iters)
  last = jnp.maximum(steps_done - 1, 0)
  metrics = {
    'step': steps_done + jnp.zeros_like(count),
    'train_loss': train_loss,
    'learning_rate': core.learning_rate_at(hparams, last, static)
    + jnp.zeros_like(train_loss),
    **evaluate_fn(state.params, data),
  }
  return state, metrics


def segment_ends(static: core.Static) -> np.ndarray:
  """The step at which each evaluation happens: every `eval_every`, and the last."""
  return np.minimum(
    np.arange(1, static.num_segments + 1) * static.eval_every, static.max_iters
  ).astype(np.int32)


def train(
  hparams: Hyperparams, data: core.DeviceData, static: core.Static
) -> tuple[model.Params, dict]:
  """A whole training run as one pure function (init, then scan over segments).

  Args:
    hparams: scalars; `jax.vmap` this function for many models at once.
    data: the device-resident splits.
    static: shapes and structure (mark static under `jax.jit`).

  Returns:
    The final params and the history: each metric of `train_segment` stacked
    over evaluations, `(num_segments,)`.
  """
  state = core.init_state(hparams, static)

  def body(state, end_step):
    return train_segment(state, hparams, data, end_step, static=static)

  state, history = jax.lax.scan(body, state, jnp.asarray(segment_ends(static)))
  return state.params, history


def static_for(
  configs: list, dataset: Dataset, max_iters: int | None = None
) -> core.Static:
  """The program of `configs`, models that share shapes and static choices.

  Args:
    configs: training configs differing only in per-model hyperparameters.
    dataset: the data they train on.
    max_iters: the steps the program runs (default: the longest `num_iters`).
  """
  config = configs[0]
  num_train = len(dataset.train_labels)
  iters_per_epoch = max(num_train // config.batch_size, 1)
  return core.Static(
    input_size=dataset.train_images.shape[1],
    hidden_size=config.hidden_size,
    num_classes=dataset.num_classes,
    batch_size=config.batch_size,
    num_train=num_train,
    max_iters=max_iters or max(c.num_iters for c in configs),
    eval_every=config.eval_every or iters_per_epoch,
    train_eval_size=min(config.train_eval_size, num_train),
    **{choice.name: config[choice.name] for choice in hparams_lib.CHOICES},
    options=hparams_lib.options_on(configs),
    augment=augment.from_config(config),
  )


def device_data(dataset: Dataset) -> core.DeviceData:
  """The train and val splits on the default device, images as uint8."""
  arrays = (
    dataset.train_images,
    dataset.train_labels,
    dataset.val_images,
    dataset.val_labels,
  )
  return core.DeviceData(*jax.device_put(arrays))


def abstract(tree):
  """`jax.ShapeDtypeStruct`s of a pytree of arrays (for ahead-of-time compiles)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


class Program(NamedTuple):
  """A compiled training program: `init(hparams)` and `segment(...)`.

  `segment(state, hparams, data, end_step)` is `train_segment`; `hparam_axes`
  is `None` for one model, else the model axis of each hyperparameter.
  """

  init: jax.stages.Compiled
  segment: jax.stages.Compiled
  static: core.Static
  hparam_axes: Hyperparams | None
  compile_seconds: float


def compile_one(
  static: core.Static, hparams: Hyperparams, data: core.DeviceData
) -> Program:
  """The program of one model (no model axis), compiled once per process."""
  t0 = time.perf_counter()
  init, segment = _compile_one(static, abstract(hparams), abstract(data))
  return Program(init, segment, static, None, time.perf_counter() - t0)


@functools.lru_cache(maxsize=8)
def _compile_one(static, hparams, data):
  init = jax.jit(core.init_state, static_argnames='static')
  state = jax.eval_shape(functools.partial(core.init_state, static=static), hparams)
  segment = jax.jit(
    functools.partial(train_segment, static=static),
    donate_argnums=0,
    compiler_options=xla_options.compiler_options(static.compute_dtype),
  )
  end_step = jax.ShapeDtypeStruct((), jnp.int32)
  return (
    init.lower(hparams, static=static).compile(),
    segment.lower(state, hparams, data, end_step).compile(),
  )


def compile_many(
  static: core.Static,
  hparams: Hyperparams,
  hparam_axes: Hyperparams,
  data: core.DeviceData,
  mesh: jax.sharding.Mesh,
) -> Program:
  """The program of many models along a model axis sharded over `mesh`.

  The state's model axis is pinned to the mesh axis `models` on output, so
  every call sees the same shardings (XLA would otherwise replicate params
  that are initialised from unbatched inputs).
  """
  t0 = time.perf_counter()
  init = jax.vmap(
    functools.partial(core.init_state, static=static),
    in_axes=(hparam_axes,),
    out_axes=core.STATE_AXES,
  )

  shardings = model_axis.state_shardings(mesh)
  init = jax.jit(init, out_shardings=shardings).lower(hparams).compile()
  options = xla_options.compiler_options(static.compute_dtype, many_models=True)
  segment = jax.jit(
    functools.partial(train_segment, static=static, hparam_axes=hparam_axes),
    donate_argnums=0,
    out_shardings=(shardings, model_axis.sharding(mesh, 0)),
    compiler_options=options,
  )
  segment = segment.lower(init(hparams), hparams, data, jnp.int32(0)).compile()
  return Program(init, segment, static, hparam_axes, time.perf_counter() - t0)


def exact_accuracies(metrics: dict, static: core.Static, num_val: int) -> dict:
  """Host metrics with float32 accuracies snapped to exact fractions k / n."""
  sizes = {'train_accuracy': static.train_eval_size, 'val_accuracy': num_val}
  return {
    k: np.round(np.asarray(v, np.float64) * sizes[k]) / sizes[k]
    if k in sizes
    else np.asarray(v)
    for k, v in metrics.items()
  }


class Outcome(NamedTuple):
  """How a job ended: its final state, its evaluations, and whether it diverged."""

  state: core.TrainState
  history: list[dict]  # one dict per evaluation; values per model with a model axis
  diverged: bool  # a single model stopped because its loss was not finite
  resumed_at: int | None  # the step a checkpoint resumed it at


@dataclasses.dataclass
class Trainer:
  """Trains a run's jobs one after another, with checkpoints to resume from.

  Attributes:
    directory: where checkpoints go (`WORKDIR/checkpoints`).
    checkpoint_every: steps between checkpoints (0: at every evaluation; the
      last step of a job always gets one).
    keep: how many checkpoints are kept.
    progress: the run's progress, in (model-)examples.
    finished: what each finished job left (`finish`), by job name; restored
      from the checkpoint a run resumes from.
  """

  directory: Path
  checkpoint_every: int
  keep: int
  progress: Progress
  finished: dict[str, Any] = dataclasses.field(default_factory=dict)
  _resume: dict | None = None
  _resume_path: Path | None = None

  def resume_from(self, path: Path | None) -> int | None:
    """Continues the run saved in checkpoint `path` (`None`: start afresh).

    Returns:
      The `step` metric of the job in progress at that checkpoint's last
      evaluation (a list, one per model, for a job with a model axis), or
      `None` if no job was in progress.
    """
    if path is None:
      return None
    metadata = checkpoint.read_metadata(path)
    try:
      self.finished = dict(metadata['finished'])
      self._resume, self._resume_path = metadata['job'], path
      return self._resume['history'][-1]['step'] if self._resume else None
    except (KeyError, IndexError, TypeError):
      raise UserError(
        f'checkpoint {path} was not written by this version: pass --restart to '
        'start over'
      ) from None

  def train(
    self,
    job: str,
    program: Program,
    hparams: Hyperparams,
    data: core.DeviceData,
    *,
    describe: Callable[[dict], str],
    on_evaluation: Callable[[dict], None] = lambda metrics: None,
    stop_on_divergence: bool = False,
    num_models: int = 1,
  ) -> Outcome:
    """Trains one job from its start, or from the checkpoint that holds it.

    Args:
      job: the job's name, unique within the run.
      program: the compiled program.
      hparams: the job's hyperparameters, on device.
      data: the device-resident splits.
      describe: the progress message for one evaluation's metrics.
      on_evaluation: called with each evaluation's metrics (host values).
      stop_on_divergence: stop once the loss is not finite (one model).
      num_models: the models the job trains (a padded chunk's padding not
        counted), for the progress.

    Returns:
      The outcome.
    """
    static = program.static
    num_val = data.val_labels.shape[0]
    state = program.init(hparams)
    history: list[dict] = []
    resumed_at = None
    if self._resume is not None and self._resume['name'] == job:
      restored, _ = checkpoint.restore(self._resume_path, like=state)
      state = jax.tree.map(
        lambda x, like: distributed.put(x, like.sharding), restored, state
      )
      history = list(self._resume['history'])
      resumed_at = int(state.step)
    examples = num_models * static.batch_size
    self.progress.done += int(state.step) * examples
    diverged = False
    last_saved = int(state.step)
    for end in segment_ends(static):
      if end <= int(state.step):
        continue
      previous = int(state.step)
      state, metrics = program.segment(state, hparams, data, jnp.int32(end))
      metrics = exact_accuracies(distributed.to_host(metrics), static, num_val)
      metrics = {k: v.tolist() for k, v in metrics.items()}
      history.append(metrics)
      on_evaluation(metrics)
      if end - last_saved >= self.checkpoint_every or end == static.max_iters:
        self._save(job, state, history)
        last_saved = int(end)
      self.progress.done += (int(end) - previous) * examples
      self.progress.log(self.progress.done, '%s', describe(metrics))
      if stop_on_divergence and not math.isfinite(metrics['train_loss']):
        diverged = True
        break
    return Outcome(state, history, diverged, resumed_at)

  def finish(self, job: str, result: Any) -> None:
    """Records what finished job `job` left (JSON-able), and saves that."""
    self.finished[job] = result
    self._save(None, {}, [])

  def _save(self, job: str | None, state, history: list[dict]) -> None:
    metadata = {
      'finished': self.finished,
      'job': None if job is None else {'name': job, 'history': history},
    }
    checkpoint.save(self.directory, state, metadata, keep=self.keep)
