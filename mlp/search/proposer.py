"""A model-based proposer as a strategy: Optuna's TPE, asked for a batch a round.

Each batch of `batch` members is asked from an Optuna study at once
(`study.ask` with the space's distributions), then trained vmapped through
successive halving's rungs. Each rung's val accuracy is reported as the
trial's intermediate value at the rung's end step; the members a rung drops
are told PRUNED, those that finish the last rung COMPLETE with their final
val accuracy (the study maximizes it). Then the next batch is asked, from a
sampler that has seen every trial told so far, until `num_samples` members.

Member `m` is the study's trial number `m`. The strategy's state holds every
trial as the study should hold it (its point, its reports, its state), and
the study is kept equal to it: whenever the study differs (it was deleted,
or a run killed after a tell and before its checkpoint left it ahead), it is
rebuilt from the state. Each trial is asked from a sampler seeded from the
search's seed and the trial's number, so a point depends on the seed and the
trials before it alone: a resumed search asks what an uninterrupted one
asks, and so does every process of a multi-process search (each with its
own copy of the study; process 0's is the workdir's file).

`init` and `tell` write to the study; `ask` only reads the state. The study
lives in the storage the client passes (`sqlite:///WORKDIR/optuna.db`, which
`optuna-dashboard` and `optuna.visualization` open), or in memory.

Optuna is an optional dependency (`pip install -e .[optuna]`), imported in
this module only.
"""

import math
from collections.abc import Sequence

import numpy as np

from mlp.errors import UserError
from mlp.search import budgets, space
from mlp.search.strategy import Report, Round, Strategy, Trial

STUDY = 'search'  # the study's name in its storage


def _optuna():
  """The `optuna` module, or a `UserError` that says how to install it."""
  try:
    import optuna
  except ImportError:
    raise UserError(
      "search=tpe needs Optuna, which is not installed: pip install -e '.[optuna]' "
      '(or pip install optuna)'
    ) from None
  return optuna


def distributions(spaces: dict[str, tuple]) -> dict:
  """Optuna's distribution of each field's space (`space.swept_values`):
  values are categorical, a 'log' range a log-scaled float, a 'linear' one a
  float, an 'int' one an integer."""
  d = _optuna().distributions
  result = {}
  for field, field_space in spaces.items():
    if not space.is_range(field_space):
      result[field] = d.CategoricalDistribution(tuple(dict.fromkeys(field_space)))
      continue
    kind, low, high = field_space
    if kind == 'int':
      result[field] = d.IntDistribution(low, high)
    else:
      result[field] = d.FloatDistribution(low, high, log=kind == 'log')
  return result


class Proposer(Strategy):
  """Batches asked from Optuna's TPE sampler, each through halving's rungs.

  Attributes:
    space: each proposed field's Optuna distribution.
    num_samples: the members, in all.
    batch: the members asked at once (the last batch may be smaller).
    ends: the step at which each rung ends.
    eta: 1/eta of a rung's members go on to the next.
    seed: the seed every trial's sampler derives from.
    startup: the trials drawn at random before TPE models the ones told
      (Optuna's `n_startup_trials`).
    storage: an Optuna storage URL (or storage), or `None`: in memory.
  """

  name = 'tpe'
  columns = ('batch', 'rung', 'steps')
  pick_rule = "the best val accuracy among the models that reached a batch's last rung"

  def __init__(
    self,
    spaces: dict[str, tuple],
    num_samples: int,
    batch: int,
    ends: Sequence[int],
    eta: int,
    seed: int,
    storage=None,
    startup: int = 10,
  ):
    self.space = distributions(spaces)
    self.proposes = tuple(spaces)
    self.num_samples, self.batch = num_samples, batch
    self.ends, self.eta, self.seed = list(ends), eta, seed
    self.startup = startup
    self.storage = storage
    self._storage = None

  def _batch(self, number: int) -> list[int]:
    return list(
      range(number * self.batch, min((number + 1) * self.batch, self.num_samples))
    )

  def _sizes(self, number: int) -> list[int]:
    return budgets.rung_sizes(len(self._batch(number)), len(self.ends), self.eta)

  @property
  def num_batches(self) -> int:
    return math.ceil(self.num_samples / self.batch)

  def init(self) -> dict:
    state = {'batch': 0, 'rung': 0, 'alive': [], 'trials': [], 'trained': [[]]}
    return self._ask_batch(self._study(state), state)

  def ask(self, state: dict) -> Round | None:
    number, rung = state['batch'], state['rung']
    if number >= self.num_batches:
      return None
    end, last = self.ends[rung], rung == len(self.ends) - 1
    trials = tuple(
      Trial(
        m, start=m if rung else None, until=end, changes=state['trials'][m]['point']
      )
      for m in state['alive']
    )
    return Round(
      trials,
      name=f'batch {number}, rung {rung + 1}/{len(self.ends)}',  # as brackets
      final=last,
      continued=not last,
      info={'batch': number, 'rung': rung + 1, 'steps': end},
    )

  def tell(self, state: dict, reports: Sequence[Report]) -> dict:
    study = self._study(state)
    number, rung = state['batch'], state['rung']
    trials = [dict(t) for t in state['trials']]
    last = rung == len(self.ends) - 1
    alive = []
    if not last:
      alive = budgets.survivors(
        [r.member for r in reports],
        [r.val_accuracy for r in reports],
        [r.diverged for r in reports],
        self._sizes(number)[rung + 1],
      )
    for r in reports:
      trial = trials[r.member]
      if math.isfinite(r.val_accuracy):
        trial['reports'] = [*trial['reports'], [self.ends[rung], r.val_accuracy]]
        self._report(r.member, self.ends[rung], r.val_accuracy)
      if r.member in alive:
        continue
      if last and not r.diverged and trial['reports']:
        trial['state'] = 'COMPLETE'
      else:  # dropped by a rung, or diverged: pruned where it has a value
        trial['state'] = 'PRUNED' if trial['reports'] else 'FAIL'
      self._tell(study, r.member, trial)
    trained = [*state['trained'][:-1], [*state['trained'][-1], len(reports)]]
    state = {**state, 'trials': trials, 'trained': trained}
    if alive:
      return {**state, 'rung': rung + 1, 'alive': alive}
    state = {**state, 'batch': number + 1, 'rung': 0, 'alive': []}
    if number + 1 == self.num_batches:
      return state
    return self._ask_batch(study, {**state, 'trained': [*trained, []]})

  def remaining_steps(self, state: dict, num_iters: Sequence[int]) -> int:
    steps = 0
    for number in range(state['batch'], self.num_batches):
      first = state['rung'] if number == state['batch'] else 0
      count = (
        len(state['alive']) if number == state['batch'] else len(self._batch(number))
      )
      for j in range(first, len(self.ends)):
        steps += count * (self.ends[j] - (self.ends[j - 1] if j else 0))
        count = max(count // self.eta, 1)
    return steps

  def summary(self, state: dict) -> dict:
    batches = [  # as Hyperband's brackets: each batch is a halving of its own
      {'rungs': self.ends, 'rung_sizes': sizes, 'models': [b[0], b[-1] + 1]}
      for b, sizes in zip(
        (self._batch(n) for n in range(self.num_batches)),
        state['trained'],
        strict=False,
      )
    ]
    told = [t['state'] for t in state['trials']]
    return {
      'search': self.name,
      'rungs': self.ends,
      'batches': batches,
      'study': {'name': STUDY, **{s.lower(): told.count(s) for s in sorted(set(told))}},
    }

  def fingerprint(self) -> dict:
    d = _optuna().distributions
    return {
      'name': self.name,
      'space': {f: d.distribution_to_json(x) for f, x in self.space.items()},
      'num_samples': self.num_samples,
      'batch': self.batch,
      'rungs': self.ends,
      'eta': self.eta,
      'seed': self.seed,
      'startup': self.startup,
    }

  # The study: asks, reports and tells, and kept equal to the state.

  def _ask_batch(self, study, state: dict) -> dict:
    """The state with the next batch's members asked from the study."""
    optuna = _optuna()
    trials = list(state['trials'])
    members = self._batch(state['batch'])
    for m in members:
      assert len(trials) == m, (len(trials), m)
      # One sampler per trial, seeded by its number: a point depends on the
      # trials before it, not on how many points this process asked before.
      seed = int(np.random.SeedSequence([self.seed, m]).generate_state(1)[0])
      # A batch's later asks see its earlier ones as running, valued as the
      # worst (constant liar), so that a batch spreads out.
      study.sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=self.startup, multivariate=True, constant_liar=True
      )
      asked = study.ask(self.space)
      point = {f: _plain(asked.params[f]) for f in self.space}
      trials.append({'point': point, 'reports': [], 'state': 'RUNNING'})
    return {**state, 'trials': trials, 'alive': members}

  def _report(self, member: int, step: int, value: float) -> None:
    # Through the storage: a `Trial` object would sample again to be made.
    storage = self._storage
    study_id = storage.get_study_id_from_name(STUDY)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, member)
    storage.set_trial_intermediate_value(trial_id, step, value)

  def _tell(self, study, member: int, trial: dict) -> None:
    state = _optuna().trial.TrialState[trial['state']]
    value = trial['reports'][-1][1] if trial['state'] == 'COMPLETE' else None
    study.tell(member, value, state=state)

  def _frozen(self, trial: dict):
    """A trial of the state as Optuna holds it once told."""
    optuna = _optuna()
    state = optuna.trial.TrialState[trial['state']]
    reports = {int(step): value for step, value in trial['reports']}
    value = (
      trial['reports'][-1][1] if trial['reports'] and state.name != 'FAIL' else None
    )
    return optuna.trial.create_trial(
      state=state,
      value=None if state.name == 'RUNNING' else value,
      params=trial['point'],
      distributions=self.space,
      intermediate_values=reports,
    )

  def _study(self, state: dict):
    """The study, equal to the state's trials: loaded if it is, else rebuilt."""
    optuna = _optuna()
    # The driver's progress lines say what Optuna's INFO line per trial would.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if self._storage is None:
      self._storage = _storage(self.storage)
    expected = [self._frozen(t) for t in state['trials']]
    try:
      study = optuna.load_study(study_name=STUDY, storage=self._storage)
    except KeyError:  # no such study
      study = None
    if study is not None:
      found = study.get_trials(deepcopy=False)
      if study.direction.name == 'MAXIMIZE' and [_told(t) for t in found] == [
        _told(t) for t in expected
      ]:
        return study
      optuna.delete_study(study_name=STUDY, storage=self._storage)
    study = optuna.create_study(
      storage=self._storage, study_name=STUDY, direction='maximize'
    )
    study.add_trials(expected)
    return study


def _storage(storage):
  """The Optuna storage of a URL (`None`: in memory; a storage: itself)."""
  optuna = _optuna()
  if storage is None:
    return optuna.storages.InMemoryStorage()
  if not isinstance(storage, str):
    return storage
  import sqlalchemy

  url = sqlalchemy.engine.make_url(storage)
  engine = {}
  if url.get_backend_name() == 'sqlite' and url.database:
    # The study mirrors the strategy's state, which rebuilds it when it lags,
    # so its commits (about 20 a trial) need not wait for the disk. A killed
    # process loses nothing; an OS crash may damage the file (then the error
    # below says what to do).
    engine = {'creator': lambda: _unsynced(url.database)}
  try:
    return optuna.storages.RDBStorage(storage, engine_kwargs=engine)
  except sqlalchemy.exc.DatabaseError as e:
    raise UserError(
      f'the Optuna study {storage} cannot be read ({e.orig}): delete the file, '
      'and the search rebuilds its study from the checkpoint'
    ) from None


def _unsynced(path: str):
  """A SQLite connection that hands its writes to the OS without syncing."""
  import sqlite3

  connection = sqlite3.connect(path, check_same_thread=False)
  connection.execute('PRAGMA synchronous=OFF')
  return connection


def _plain(value):
  """A proposed value as a Python number (the state is JSON)."""
  return value.item() if isinstance(value, np.generic) else value


def _told(trial) -> tuple:
  """What the sampler reads of a trial (its number is its place)."""
  return (
    trial.state,
    trial.params,
    trial.distributions,
    trial.intermediate_values,
    trial.value,
  )
