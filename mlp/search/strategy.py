"""What a search strategy is: an ask/tell state machine over a population.

A strategy decides which members train, from where and until when; the
population driver (`mlp.search.population`) does everything else (shapes,
chunks, devices, programs, checkpoints). A strategy holds no JAX program and
writes no file: its state is a small JSON-able dict, saved in every
checkpoint, so a search resumes where it stopped.

  state = strategy.init()
  while (round_ := strategy.ask(state)) is not None:
    reports = train(round_)  # the driver's business
    state = strategy.tell(state, reports)

`ask` is a pure function of the state (the driver may call it twice).
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Trial:
  """One member's training in a round.

  Attributes:
    member: the member's index in the search (its row in the results).
    start: the member whose state at the end of the previous round this
      trial continues (itself, or a donor it copies); `None`: from scratch.
    until: the step the trial trains to; `None`: the member's `num_iters`.
    changes: hyperparameters set for this round (population-based
      training's copied and perturbed values), over the member's own.
  """

  member: int
  start: int | None = None
  until: int | None = None
  changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Round:
  """What a strategy asks for next.

  Attributes:
    trials: the round's trials, one per member at most.
    name: where the search is, for progress lines ('rung 2/3').
    final: whether the trials end their members' training: the best model
      is chosen among final trials.
    continued: whether a later round may start from these trials' states
      (the driver keeps them until the next round has gathered its starts).
    info: columns every trial of the round gets in the results
      ('bracket', 'rung', 'steps'); the member's last round's count.
  """

  trials: tuple[Trial, ...]
  name: str
  final: bool = True
  continued: bool = False
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Report:
  """How a trial ended: what `tell` learns of it."""

  member: int
  val_accuracy: float
  diverged: bool  # its loss or params stopped being finite, or exploded


class Strategy:
  """The interface every strategy implements (see the module docstring).

  Attributes:
    name: the strategy's name, as `config.search` spells it.
    columns: the results columns it adds after the metrics, filled from
      each member's last round's `info` ('copies': how many times a member
      started from another member's state).
    schedule: hyperparameters whose values may change between rounds; the
      results record each member's value at every evaluation.
    proposes: hyperparameters a member takes from its trials' `changes`
      rather than from its config (a proposer's points): they are stacked
      along the model axis, and the results show the first trial's values.
    pick_rule: how the search's pick is chosen, for the results' caption.
  """

  name: str = ''
  columns: tuple[str, ...] = ()
  schedule: tuple[str, ...] = ()
  proposes: tuple[str, ...] = ()
  pick_rule: str = 'the best val accuracy'

  def init(self) -> dict:
    """The state before the first round."""
    raise NotImplementedError

  def ask(self, state: dict) -> Round | None:
    """The next round, or `None` when the search is done."""
    raise NotImplementedError

  def tell(self, state: dict, reports: Sequence[Report]) -> dict:
    """The state after the round `ask(state)` returned, given its reports."""
    raise NotImplementedError

  def remaining_steps(self, state: dict, num_iters: Sequence[int]) -> int:
    """Model-steps left from `state` (an estimate, for the progress line).

    Args:
      state: the search's state.
      num_iters: each member's `num_iters`.
    """
    raise NotImplementedError

  def summary(self, state: dict) -> dict:
    """The search's own entries of `summary.json` (rungs, intervals...)."""
    return {}

  def fingerprint(self) -> dict:
    """What identifies this search, JSON-able: a resumed checkpoint's state
    is refused unless it was saved by a strategy with the same fingerprint."""
    return {'name': self.name}
