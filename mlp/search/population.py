"""The one population driver: any strategy's rounds, trained vmapped.

A strategy (`strategy.Strategy`) says which members train in a round, from
where and until when. This module does the rest, the same for every
strategy:

1. group the round's trials by shape (hidden size, batch size) and cut each
   group into chunks that fit in memory, padded to the device count;
2. compile each chunk's program once per process (a cache keyed by its
   shapes, static choices and batched fields);
3. gather the rows of the states a trial starts from, and train each chunk
   as a job of `loop.Trainer` (checkpoints, resume, progress, divergence);
4. tell the strategy the round's reports, ask for the next round, and keep
   the states it starts from in the checkpoint.

Everything a resumed search needs is in its checkpoint: the strategy's
state, the rounds done (each trial's evaluations), the finished chunks of
the round in progress, and as arrays the best model's params, the end
states of this round's finished chunks (when a later round may continue
them) and the start states of the chunks not yet begun.
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from mlp import distributed, hparams, loop, model_axis, models
from mlp.data import Dataset
from mlp.errors import UserError
from mlp.search.strategy import Report, Round, Strategy, Trial
from mlp.step import core

SEARCH = 'search'  # the key of the search's record among the trainer's `finished`
BEST = 'best'


@dataclasses.dataclass
class Population:
  """What the driver trains, besides the strategy.

  Attributes:
    configs: each member's training config, by member index.
    dataset: the data every member trains on.
    fields: the hyperparameters stacked along the model axis (the rest are
      shared), the same in every chunk so that chunks share programs.
    trainer: the run's trainer (checkpoints and progress).
    models_per_chunk: the most models one program trains at once.
    on_evaluation: called with a chunk's members and each evaluation's
      metrics (host values, model axis first).
    model: the model every member is (`models.Model`).
  """

  configs: list[ml_collections.ConfigDict]
  dataset: Dataset
  fields: tuple[str, ...]
  trainer: loop.Trainer
  models_per_chunk: Callable[[core.Static], int]
  on_evaluation: Callable[[list[int], dict], None] | None = None
  model: models.Model = models.MLP
  compile_seconds: float = 0.0  # compiling, in this process
  model_examples: float = 0.0  # trained, for the rate
  # Compiled programs by (static, batched fields, chunk size): one compile a
  # process for every round, rung and bracket of the same shapes.
  programs: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.group_order = list(dict.fromkeys(shape_of(c) for c in self.configs))
    self.mesh = model_axis.model_mesh()
    self.device = model_axis.replicated_data(self.dataset, self.mesh)


def statics(
  configs: list, dataset: Dataset, model: models.Model = models.MLP
) -> dict[tuple[int, int], core.Static]:
  """Each shape group's program (`loop.static_for` of all its members), in
  the order of the groups' first members."""
  groups: dict[tuple[int, int], list] = {}
  for config in configs:
    groups.setdefault(shape_of(config), []).append(config)
  return {
    key: loop.static_for(group, dataset, model=model) for key, group in groups.items()
  }


@dataclasses.dataclass(frozen=True)
class Chunk:
  """Trials that train together in one program: a job of the trainer."""

  job: str  # unique in the run: 'round R, chunk C'
  static: core.Static  # the program's shapes and choices
  trials: tuple[Trial, ...]
  size: int  # the program's model axis (the trials, padded)

  @property
  def padded(self) -> tuple[Trial, ...]:
    return self.trials + (self.trials[-1],) * (self.size - len(self.trials))


@dataclasses.dataclass
class Best:
  """The best final trial so far: higher val accuracy, or the same and a lower
  member index; never a diverged one. Its params are kept in each checkpoint."""

  member: int | None = None
  val_accuracy: float = -math.inf
  params: dict | None = None

  def offer(self, reports: list[dict], params) -> None:
    """Offers a chunk's reports in turn (`params`: model axis first, only a
    winner's row is brought to the host)."""
    for i, r in enumerate(reports):
      if r['diverged'] or (r['val_accuracy'], -r['member']) <= (
        self.val_accuracy,
        -(self.member if self.member is not None else math.inf),
      ):
        continue
      self.member, self.val_accuracy = r['member'], r['val_accuracy']
      self.params = distributed.to_host(jax.tree.map(lambda x, i=i: x[i], params))

  def record(self) -> dict:
    return {'member': self.member, 'val_accuracy': self.val_accuracy}

  def kept(self) -> dict:
    return {f'best/{k}': v for k, v in models.flat(self.params or {}).items()}


def shape_of(config) -> tuple[int, int]:
  """The fields that fix a program's array shapes (of a config or a `Static`)."""
  return (config.hidden_size, config.batch_size)


def run(strategy: Strategy, population: Population) -> tuple[dict, list[dict], Best]:
  """Runs `strategy` over `population` to its end, resuming from the trainer's
  checkpoint if it holds the same search.

  Returns:
    The strategy's final state, the rounds (each `{'name', 'info', 'final',
    'reports'}`: one report per trial, with its evaluations) and the best
    final trial.
  """
  trainer = population.trainer
  # 1. Where the search stands: the checkpoint's record, else the start.
  fingerprint = _json(strategy.fingerprint())
  state, rounds, best = _restore(strategy, population, fingerprint)
  num_iters = [c.num_iters for c in population.configs]
  batch = float(np.mean([c.batch_size for c in population.configs]))
  round_ = strategy.ask(state)
  while round_ is not None:
    trainer.progress.total = trainer.progress.done + int(
      strategy.remaining_steps(state, num_iters) * batch
    )
    # 2. Train the round, chunk by chunk.
    chunks = _chunks(len(rounds), round_, population)
    reports, ends = _train_round(chunks, round_, rounds, population, best)
    # 3. Tell the strategy and ask for the next round.
    state = strategy.tell(
      state, [Report(r['member'], r['val_accuracy'], r['diverged']) for r in reports]
    )
    rounds.append(
      {
        'name': round_.name,
        'info': dict(round_.info),
        'final': round_.final,
        'reports': reports,
      }
    )
    round_ = strategy.ask(state)
    # 4. Save the search, with the states the next round starts from.
    starts = {}
    if round_ is not None:
      ends |= _kept_ends(trainer.kept, chunks)
      starts = _starts(len(rounds), round_, population, chunks, ends)
    trainer.finished = {
      SEARCH: {'fingerprint': fingerprint, 'state': state, 'rounds': rounds},
      BEST: best.record(),
    }
    trainer.finish(SEARCH, trainer.finished[SEARCH], kept={**best.kept(), **starts})
  return state, rounds, best


def _restore(strategy: Strategy, population: Population, fingerprint: dict):
  """The search's state, its rounds done and its best model, from the
  checkpoint the trainer resumed from, else the strategy's start."""
  trainer = population.trainer
  saved = trainer.finished.get(SEARCH)
  if saved is not None and saved['fingerprint'] != fingerprint:
    raise UserError(
      f'the checkpoints in {trainer.directory} hold the state of another search '
      f'({saved["fingerprint"]["name"]}): pass --restart to start over'
    )
  state, rounds = (saved['state'], saved['rounds']) if saved else (strategy.init(), [])
  best = Best(**trainer.finished.get(BEST, {}))
  best.params = _kept_params(population, best.member)
  if trainer.resumed_from is not None:
    in_progress = [
      r for job, r in trainer.finished.items() if job not in (SEARCH, BEST)
    ]
    logging.info(
      'Resuming from %s: %d round(s) done, and %d model(s) of the next.',
      trainer.resumed_from,
      len(rounds),
      sum(len(r['reports']) for r in in_progress),
    )
  return state, rounds, best


def _train_round(chunks, round_: Round, rounds: list, population: Population, best):
  """Trains the round's chunks not finished yet; returns every trial's report
  and the end states this run trained (when a later round may continue them).

  Each finished chunk but the last is saved with its record and, if it may be
  continued, its end state; the last one is saved with the round.
  """
  trainer = population.trainer
  ends: dict[str, list] = {}
  reports = []
  for i, chunk in enumerate(chunks):
    record = trainer.finished.get(chunk.job)
    if record is not None:  # finished before a resume
      trainer.progress.done += record['model_examples']
      population.model_examples += record['model_examples']
    else:
      record, end = _train(chunk, round_, rounds, population, best)
      if round_.continued:
        ends[chunk.job] = end
      trainer.finished[chunk.job] = record
      if i < len(chunks) - 1:
        trainer.finished[BEST] = best.record()
        kept = {**_drop(trainer.kept, 'best/'), **best.kept()}
        kept |= {f'end/{chunk.job}/{j}': x for j, x in enumerate(end or [])}
        trainer.finish(chunk.job, record, kept=kept)
    reports.extend(record['reports'])
  return reports, ends


def _json(value):
  """`value` as JSON gives it back (tuples become lists), to compare with a
  checkpoint's."""
  import json

  return json.loads(json.dumps(value))


def _drop(kept: dict, prefix: str) -> dict:
  return {k: v for k, v in kept.items() if not k.startswith(prefix)}


def _chunks(number: int, round_: Round, population: Population) -> list[Chunk]:
  """The round's trials by shape group (in the order of the groups' first
  members), cut into chunks that fit and padded to the device count."""
  groups: dict[tuple, list[Trial]] = {key: [] for key in population.group_order}
  for trial in round_.trials:
    groups.setdefault(shape_of(member_config(population, trial)), []).append(trial)
  num_devices = jax.device_count()
  chunks = []
  for trials in groups.values():
    if not trials:
      continue
    static = loop.static_for(
      [member_config(population, t) for t in trials],
      population.dataset,
      model=population.model,
    )
    size = min(
      population.models_per_chunk(static),
      math.ceil(len(trials) / num_devices) * num_devices,
    )
    for start in range(0, len(trials), size):
      part = tuple(trials[start : start + size])
      if len({t.start is None for t in part}) > 1 or len({t.until for t in part}) > 1:
        raise ValueError(f'{round_.name}: a chunk mixes starts or ends: {part}')
      chunks.append(Chunk(f'round {number}, chunk {len(chunks)}', static, part, size))
  return chunks


def _program(chunk: Chunk, values, axes, population: Population) -> loop.Program:
  """The chunk's compiled program, from the cache when one fits."""
  static = chunk.static
  cache_key = (static, population.fields, chunk.size)
  program = population.programs.get(cache_key)
  if program is None:
    program = loop.compile_many(
      static, values, axes, population.device, population.mesh
    )
    population.programs[cache_key] = program
    population.compile_seconds += program.compile_seconds
    population.trainer.progress.start_time += program.compile_seconds
  return program


def member_config(population: Population, trial: Trial) -> ml_collections.ConfigDict:
  """The training config of `trial`: its member's, with the round's changes."""
  config = population.configs[trial.member]
  if not trial.changes:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  for name, value in trial.changes.items():
    config[name] = value
  return config


def _train(chunk: Chunk, round_: Round, rounds: list, population: Population, best):
  """Trains one chunk; returns its record and, if a later round may continue
  it, its end state's leaves (host arrays, model axis first)."""
  trainer = population.trainer
  padded = chunk.padded
  values, axes = hparams.stack(
    [
      hparams.of_config(member_config(population, t), population.model.hyperparams)
      for t in padded
    ],
    population.fields,
  )
  values = model_axis.put_models(values, population.mesh, axes)
  program = _program(chunk, values, axes, population)
  initial, initial_loss = _start(chunk, rounds, population, program, values)
  members = [t.member for t in chunk.trials]

  def on_evaluation(metrics):
    if population.on_evaluation is not None:
      population.on_evaluation(members, metrics)

  done_before = trainer.progress.done
  outcome = trainer.train(
    chunk.job,
    program,
    values,
    population.device,
    describe=_describe(round_, chunk, program.static),
    on_evaluation=on_evaluation,
    num_models=len(members),
    state=initial,
    until=chunk.trials[0].until,
    initial_loss=initial_loss,
  )
  reports = _reports(chunk, outcome)
  if round_.final:
    best.offer(reports, outcome.state.params)
  record = {
    'reports': reports,
    'model_examples': trainer.progress.done - done_before,
  }
  population.model_examples += record['model_examples']
  end = None
  if round_.continued:
    end = jax.tree.leaves(distributed.to_host(outcome.state))
  return record, end


def _start(chunk: Chunk, rounds: list, population: Population, program, values):
  """Where a chunk's trials start: `(None, None)` from scratch; else the
  state gathered for it (taken out of the kept arrays: the chunk's own
  checkpoints hold its state from now on) and each trial's initial loss, the
  start member's (divergence is judged against it, as in a run alone)."""
  if chunk.trials[0].start is None:
    return None, None
  trainer = population.trainer
  losses = {r['member']: r['start_loss'] for r in rounds[-1]['reports']}
  initial_loss = [losses[t.start] for t in chunk.padded]
  prefix = f'start/{chunk.job}/'
  names = sorted(
    (k for k in trainer.kept if k.startswith(prefix)),
    key=lambda k: int(k.removeprefix(prefix)),
  )
  leaves = [trainer.kept.pop(name) for name in names]
  if not leaves:
    if not trainer.holds(chunk.job):  # the checkpoint holds the job in progress
      raise ValueError(f'no start state for {chunk.job} in the checkpoint')
    return None, initial_loss
  like = program.init(values)
  tree = jax.tree.unflatten(jax.tree.structure(like), leaves)
  state = jax.tree.map(lambda x, to: distributed.put(x, to.sharding), tree, like)
  return state, initial_loss


def _describe(round_: Round, chunk: Chunk, static: core.Static):
  """The progress message of a chunk's evaluation."""
  name = f'{round_.name}, ' if round_.name else ''
  count = len(chunk.trials)
  models = f'{count} model' + ('s' if count > 1 else '')
  until = chunk.trials[0].until or static.max_iters

  def describe(metrics):
    return (
      f'{name}H {static.hidden_size}, {models}: step {max(metrics["step"])}/'
      f'{until}, best val acc {np.nanmax(metrics["val_accuracy"][:count]):.4f}'
    )

  return describe


def _reports(chunk: Chunk, outcome: loop.Outcome) -> list[dict]:
  """Each trial's report: its evaluations and how it ended."""
  history = outcome.history
  curves = {
    k: np.stack([np.asarray(h[k]) for h in history], axis=1) for k in history[0]
  }
  finite = model_axis.finite_per_model(outcome.state.params)
  diverged = loop.diverged(curves['train_loss'], outcome.start_loss)
  return [
    {
      'member': t.member,
      'start': t.start,
      'changes': dict(t.changes),
      'val_accuracy': float(curves['val_accuracy'][i, -1]),
      'train_accuracy': float(curves['train_accuracy'][i, -1]),
      'final_loss': float(curves['train_loss'][i, -1]),
      'diverged': bool(diverged[i] or not finite[i]),
      'start_loss': outcome.start_loss[i],
      'history': {k: v[i].tolist() for k, v in curves.items()},
    }
    for i, t in enumerate(chunk.trials)
  ]


def _kept_ends(kept: dict, chunks: list[Chunk]) -> dict[str, list]:
  """The end states of chunks finished before a resume, from the checkpoint."""
  ends = {}
  for chunk in chunks:
    prefix = f'end/{chunk.job}/'
    names = [k for k in kept if k.startswith(prefix)]
    if names:
      names.sort(key=lambda k: int(k.rsplit('/', 1)[1]))
      ends[chunk.job] = [kept[k] for k in names]
  return ends


def _starts(number: int, round_: Round, population, chunks, ends) -> dict:
  """The start states of the next round's chunks, as kept arrays: for each
  chunk, each state leaf's rows of the trials' `start` members."""
  where = {}
  for chunk in chunks:
    for row, trial in enumerate(chunk.trials):
      where[trial.member] = (chunk.job, row)
  starts = {}
  for chunk in _chunks(number, round_, population):
    if chunk.trials[0].start is None:
      continue
    sources = [where[t.start] for t in chunk.padded]
    first = ends[sources[0][0]]
    for j in range(len(first)):
      if np.ndim(first[j]) == 0:  # the shared step
        starts[f'start/{chunk.job}/{j}'] = first[j]
      else:
        starts[f'start/{chunk.job}/{j}'] = np.stack(
          [ends[job][j][row] for job, row in sources]
        )
  return starts


def train_again(member: int, population: Population) -> dict:
  """Trains `member` from scratch to its `num_iters`, alone in a chunk of its
  group's size (a program already compiled), and returns its params; once
  done, they are kept in the checkpoint."""
  trainer = population.trainer
  job = f'member {member} again'
  if job in trainer.finished:
    return _kept_params(population, member)
  config = population.configs[member]
  # A program of its shape group, already compiled, serves (its padding unused).
  cached = [k for k in population.programs if shape_of(k[0]) == shape_of(config)]
  if cached:
    static, _, size = cached[0]
  else:
    static = loop.static_for([config], population.dataset, model=population.model)
    size = jax.device_count()
  chunk = Chunk(job, static, (Trial(member),), size)
  one = hparams.of_config(config, population.model.hyperparams)
  values, axes = hparams.stack([one] * size, population.fields)
  values = model_axis.put_models(values, population.mesh, axes)
  program = _program(chunk, values, axes, population)
  outcome = trainer.train(
    job,
    program,
    values,
    population.device,
    describe=lambda m: f'member {member + 1} again: step {max(m["step"])}',
    num_models=0,
  )
  params = distributed.to_host(jax.tree.map(lambda x: x[0], outcome.state.params))
  trainer.finish(job, {}, kept={f'best/{k}': v for k, v in models.flat(params).items()})
  return params


def _kept_params(population: Population, member: int | None):
  """The best params kept in the trainer's checkpoint, in the model's own
  pytree (that of `member`'s init), or `None`."""
  arrays = {
    k.removeprefix('best/'): v
    for k, v in population.trainer.kept.items()
    if k.startswith('best/')
  }
  if not arrays or member is None:
    return None
  config = population.configs[member]
  static = loop.static_for([config], population.dataset, model=population.model)
  one = hparams.of_config(config, population.model.hyperparams)
  return models.unflat(arrays, models.init_shapes(population.model, one, static))
