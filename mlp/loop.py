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

from mlp import augment, checkpoint, distributed, interrupt, model_axis, models, step
from mlp import hparams as hparams_lib
from mlp.data import Dataset, scale_images
from mlp.errors import UserError
from mlp.hparams import Hyperparams
from mlp.progress import Progress
from mlp.step import core, xla_options


def evaluate(params, data: core.DeviceData, static: core.Static) -> dict:
  """The model's accuracy on the first `train_eval_size` training images and on val."""
  n = static.train_eval_size
  accuracy = static.model.accuracy
  return {
    'train_accuracy': accuracy(
      params, scale_images(data.train_images[:n]), data.train_labels[:n], static
    ),
    'val_accuracy': accuracy(
      params, scale_images(data.val_images), data.val_labels, static
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
) -> tuple[Any, dict]:
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
  configs: list,
  dataset: Dataset,
  max_iters: int | None = None,
  model: models.Model = models.MLP,
) -> core.Static:
  """The program of `configs`, models that share shapes and static choices.

  Args:
    configs: training configs differing only in per-model hyperparameters.
    dataset: the data they train on.
    max_iters: the steps the program runs (default: the longest `num_iters`).
    model: the model they train.
  """
  config = configs[0]
  num_train = len(dataset.train_labels)
  iters_per_epoch = max(num_train // config.batch_size, 1)
  return core.Static(
    input_size=math.prod(dataset.train_images.shape[1:]),
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
    model=model,
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
  """A compiled training program: `init(hparams)`, `segment(...)` and
  `start_loss(params, hparams, data)`, all compiled before training starts.

  `segment(state, hparams, data, end_step)` is `train_segment`; `start_loss`
  is `start_loss` of this program's params; `hparam_axes` is `None` for one
  model, else the model axis of each hyperparameter.
  """

  init: jax.stages.Compiled
  segment: jax.stages.Compiled
  start_loss: jax.stages.Compiled
  static: core.Static
  hparam_axes: Hyperparams | None
  compile_seconds: float


def compile_one(
  static: core.Static, hparams: Hyperparams, data: core.DeviceData
) -> Program:
  """The program of one model (no model axis), compiled once per process."""
  t0 = time.perf_counter()
  compiled = _compile_one(static, abstract(hparams), abstract(data))
  return Program(*compiled, static, None, time.perf_counter() - t0)


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
    start_loss.lower(state.params, hparams, data, static).compile(),
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
  init = jax.jit(init, out_shardings=shardings)
  state = jax.eval_shape(init, hparams)  # with the shardings init gives
  options = xla_options.compiler_options(static.compute_dtype, many_models=True)
  segment = jax.jit(
    functools.partial(train_segment, static=static, hparam_axes=hparam_axes),
    donate_argnums=0,
    out_shardings=(shardings, model_axis.sharding(mesh, 0)),
    compiler_options=options,
  )
  end_step = jax.ShapeDtypeStruct((), jnp.int32)
  compiled = (
    init.lower(hparams).compile(),
    segment.lower(state, hparams, data, end_step).compile(),
    start_loss.lower(state.params, hparams, data, static, hparam_axes).compile(),
  )
  return Program(*compiled, static, hparam_axes, time.perf_counter() - t0)


def exact_accuracies(metrics: dict, static: core.Static, num_val: int) -> dict:
  """Host metrics with float32 accuracies snapped to exact fractions k / n."""
  sizes = {'train_accuracy': static.train_eval_size, 'val_accuracy': num_val}
  return {
    k: np.round(np.asarray(v, np.float64) * sizes[k]) / sizes[k]
    if k in sizes
    else np.asarray(v)
    for k, v in metrics.items()
  }


DIVERGENCE_FACTOR = 100.0


@functools.partial(jax.jit, static_argnames=('static', 'hparam_axes'))
def start_loss(
  params,
  hparams: Hyperparams,
  data: core.DeviceData,
  static: core.Static,
  hparam_axes: Hyperparams | None = None,
) -> jax.Array:
  """The loss of initial params on the training subset (per model with axes),
  with nothing random (no dropout: the model's loss gets no key).

  The reference for divergence: see `diverged`.
  """
  n = static.train_eval_size
  x, labels = scale_images(data.train_images[:n]), data.train_labels[:n]

  def one(params, hparams):
    return static.model.loss(params, x, labels, hparams, static, None)

  if hparam_axes is not None:
    one = jax.vmap(one, in_axes=(0, hparam_axes))
  return one(params, hparams)


def diverged(losses, start: float | np.ndarray) -> np.ndarray:
  """Whether training diverged: a loss that is not finite, or that is more
  than `DIVERGENCE_FACTOR` times the loss of the initial params (`start`).

  Args:
    losses: training losses, evaluations along the last axis.
    start: the loss at initialisation (per model).

  Returns:
    A bool (array, per model): whether any of `losses` crossed the bound.
  """
  losses = np.asarray(losses, np.float64)
  bound = DIVERGENCE_FACTOR * np.asarray(start, np.float64)[..., None]
  with np.errstate(invalid='ignore'):
    return np.any(~np.isfinite(losses) | (losses > bound), axis=-1)


class Outcome(NamedTuple):
  """How a job ended: its final state, its evaluations, and whether it diverged."""

  state: core.TrainState
  history: list[dict]  # one dict per evaluation; values per model with a model axis
  start_loss: float | list[float]  # the loss of the initial params (per model)
  diverged: bool  # a single model stopped because it diverged (see `diverged`)
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
    config: the run's config, stored in each checkpoint (a resume is checked
      against it).
    finished: what each finished job left (`finish`), by job name; restored
      from the checkpoint a run resumes from.
    kept: arrays finished jobs left (`finish`), by name; restored likewise.
  """

  directory: Path
  checkpoint_every: int
  keep: int
  progress: Progress
  config: dict = dataclasses.field(default_factory=dict)
  finished: dict[str, Any] = dataclasses.field(default_factory=dict)
  kept: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  _resume: dict | None = None
  _resume_from: tuple[Path, checkpoint.Contents] | None = None

  @classmethod
  def of_run(cls, workdir: Path, config, progress: Progress) -> 'Trainer':
    """The trainer of a run with `config` in `workdir` (`WORKDIR/checkpoints`)."""
    return cls(
      workdir / checkpoint.DIRNAME,
      config.checkpoint_every,
      config.keep_checkpoints,
      progress,
      config=config.to_dict(),
    )

  def resume_from(self, found: tuple[Path, checkpoint.Contents] | None) -> int | None:
    """Continues the run saved in a checkpoint (`None`: start afresh).

    Args:
      found: a checkpoint's path and contents (`checkpoint.prepare_resume`).

    Returns:
      The `step` metric of the job in progress at that checkpoint's last
      evaluation (a list, one per model, for a job with a model axis), or
      `None` if no job was in progress.
    """
    if found is None:
      return None
    path, contents = found
    try:
      self.finished = dict(contents.metadata['finished'])
      self.kept = dict(contents.kept)
      self._resume, self._resume_from = contents.metadata['job'], found
      return self._resume['history'][-1]['step'] if self._resume else None
    except (KeyError, IndexError, TypeError):
      raise UserError(
        f'checkpoint {path} was not written by this version: pass --restart to '
        'start over'
      ) from None

  @property
  def resumed_from(self) -> Path | None:
    """The checkpoint the run resumed from, or `None`."""
    return None if self._resume_from is None else self._resume_from[0]

  def holds(self, job: str) -> bool:
    """Whether the checkpoint resumed from holds job `job` in progress."""
    return self._resume is not None and self._resume['name'] == job

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
    state: core.TrainState | None = None,
    until: int | None = None,
    initial_loss: list[float] | None = None,
  ) -> Outcome:
    """Trains one job from its start, or from the checkpoint that holds it.

    A signal (`interrupt`) during a segment takes effect at its end, after a
    checkpoint.

    Args:
      job: the job's name, unique within the run.
      program: the compiled program.
      hparams: the job's hyperparameters, on device.
      data: the device-resident splits.
      describe: the progress message for one evaluation's metrics.
      on_evaluation: called with each evaluation's metrics (host values).
      stop_on_divergence: stop once the loss diverged (one model; `diverged`).
      num_models: the models the job trains (a padded chunk's padding not
        counted), for the progress.
      state: where the job starts (default: `program.init(hparams)`), e.g.
        the survivors of a search's previous rung; its steps count as done.
      until: the step the job ends at (default: the program's `max_iters`),
        e.g. the end of an interval of population-based training.
      initial_loss: with `state`, the loss of each model's initial params
        (divergence is measured against it; default: the loss of `state`).

    Returns:
      The outcome.
    """
    static = program.static
    num_val = data.val_labels.shape[0]
    state = program.init(hparams) if state is None else state
    start_step = int(state.step)
    history: list[dict] = []
    resumed_at = None
    if self._resume is not None and self._resume['name'] == job:
      path, contents = self._resume_from
      restored = checkpoint.restore(contents, like=state, path=path)
      state = jax.tree.map(
        lambda x, like: distributed.put(x, like.sharding), restored, state
      )
      history = list(self._resume['history'])
      initial = self._resume['start_loss']
      resumed_at = int(state.step)
    elif initial_loss is not None:
      initial = initial_loss
    else:
      initial = distributed.to_host(program.start_loss(state.params, hparams, data))
      initial = initial.tolist()
    interrupt.position = self._position(job, int(state.step))
    interrupt.finished = False
    examples = num_models * static.batch_size
    self.progress.done += (int(state.step) - start_step) * examples
    stopped = False
    last_saved = int(state.step)
    until = static.max_iters if until is None else until
    ends = [int(e) for e in segment_ends(static) if e < until] + [until]
    with interrupt.deferred():
      for end in ends:
        if end <= int(state.step):
          continue
        previous = int(state.step)
        state, metrics = program.segment(state, hparams, data, jnp.int32(end))
        metrics = exact_accuracies(distributed.to_host(metrics), static, num_val)
        metrics = {k: v.tolist() for k, v in metrics.items()}
        history.append(metrics)
        on_evaluation(metrics)
        stop = distributed.any_process(interrupt.pending())
        if end - last_saved >= self.checkpoint_every or end == until or stop:
          self._save(job, state, history, initial)
          last_saved = int(end)
        interrupt.position = self._position(job, int(end))
        self.progress.done += (int(end) - previous) * examples
        self.progress.log(self.progress.done, '%s', describe(metrics))
        if stop:
          interrupt.raise_if_pending()
        if stop_on_divergence and diverged([metrics['train_loss']], initial):
          stopped = True
          break
    return Outcome(state, history, initial, stopped, resumed_at)

  @staticmethod
  def _position(job: str, step: int) -> str:
    return f'step {step}' if job == 'model' else f'step {step} of {job}'

  def finish(
    self,
    job: str,
    result: Any,
    kept: dict[str, np.ndarray] | None = None,
    save: bool = True,
  ):
    """Records what finished job `job` left (JSON-able, and arrays to keep
    instead of those kept so far), and saves that.

    With `save=False` the record goes into the next checkpoint, that of a
    job starting from the state this one left (population-based training's
    next interval): a kill before it resumes this job at its end.
    """
    self.finished[job] = result
    if kept is not None:
      self.kept = dict(kept)
    if save:
      self._save(None, {}, [], None)

  def _save(self, job: str | None, state, history: list[dict], initial) -> None:
    metadata = {
      'config': self.config,
      'finished': self.finished,
      'job': None
      if job is None
      else {'name': job, 'history': history, 'start_loss': initial},
    }
    checkpoint.save(self.directory, state, metadata, keep=self.keep, kept=self.kept)
