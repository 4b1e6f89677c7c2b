"""The evaluator protocol: what turns an architecture into a reward.

The run loop hands an evaluator :class:`Trial` objects (a trial id, the architecture and
a per-trial seed derived from the run's seed) and gets :class:`EvalResult` objects back.
The reward is the *search signal* (validation accuracy, or minus a validation loss): it
is the only number a searcher sees. ``test`` is reported, never searched on.

Two shapes of evaluator exist:

* a plain :class:`Evaluator` has ``evaluate(trial) -> EvalResult`` (table lookups, the
  local JAX trainer);
* an *executor* (:class:`layernas.executors.Executor`) keeps several trials in flight:
  ``submit(trial)``, then ``wait()`` returns whatever has finished (one trial per device,
  several processes, Ray). :class:`layernas.executors.SerialExecutor` turns any plain
  evaluator into one.

A failed trial (NaN loss, divergence, a worker that died too often) is an EvalResult with
``status="failed"`` and the reason in ``error``; the search goes on without it. Executors
call evaluators through :func:`layernas.executors.evaluate_safely`, so an evaluator that
raises, or returns something other than an EvalResult, gives such a failed trial too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from layernas.space import Arch


def trial_seed(run_seed: int, trial_id: int) -> int:
    """The seed of one trial: a pure function of the run's seed and the trial id.

    It does not depend on which worker runs the trial or in what order results arrive,
    so a resumed or distributed run evaluates every trial exactly as a local one would.
    """
    return int(np.random.SeedSequence([int(run_seed), int(trial_id)]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class Trial:
    """One evaluation to perform."""

    trial_id: int
    arch: Arch
    seed: int

    def to_dict(self) -> dict:
        return {"trial_id": self.trial_id, "arch": list(self.arch), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> "Trial":
        return cls(int(d["trial_id"]), tuple(int(a) for a in d["arch"]), int(d["seed"]))


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """The outcome of one trial.

    Attributes:
      trial_id: the id of the trial this answers.
      arch: the architecture evaluated.
      reward: the search signal, higher is better (validation accuracy in percent for
        the NATS tables). NaN when the trial failed.
      cost_seconds: seconds charged to the search budget: simulated training time for
        table lookups, measured wall time for real training.
      test: the reported metric (test accuracy), or None when unknown. Never searched on.
      costs: cost metrics measured or looked up for this architecture (may be empty; the
        run loop adds the space's own cost model).
      status: "ok" or "failed".
      error: the reason for a failure.
      info: anything else worth keeping (the table seed used, losses, wall time ...).
    """

    trial_id: int
    arch: Arch
    reward: float
    cost_seconds: float = 0.0
    test: float | None = None
    costs: dict[str, float] = dataclasses.field(default_factory=dict)
    status: str = "ok"
    error: str = ""
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and math.isfinite(self.reward)

    @classmethod
    def failed(cls, trial: Trial, error: str, cost_seconds: float = 0.0, **info) -> "EvalResult":
        return cls(trial.trial_id, trial.arch, float("nan"), cost_seconds, None, {}, "failed", error, info)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["arch"] = list(self.arch)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        d = dict(d)
        d["arch"] = tuple(int(a) for a in d["arch"])
        return cls(**d)


def fast_builder(cls):
    """``(*field values in declaration order) -> cls instance``, for the hot path of table
    searches: a frozen dataclass's ``__init__`` sets each field with one
    ``object.__setattr__`` (for an EvalResult, about half the cost of a table lookup), while
    filling the instance dict builds the same object in a fraction of that. ``cls`` itself (its ordinary constructor) when it
    has ``__post_init__`` validation or ``__slots__``, so nothing is ever skipped.

    Example:
        >>> build = fast_builder(Trial)
        >>> build(3, (0, 1), 7) == Trial(3, (0, 1), 7)
        True
    """
    if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__"):
        return cls
    names = tuple(f.name for f in dataclasses.fields(cls))
    new = object.__new__

    def build(*values):
        instance = new(cls)
        instance.__dict__.update(zip(names, values))
        return instance

    return build


@runtime_checkable
class Evaluator(Protocol):
    """Evaluates one trial at a time, synchronously."""

    def evaluate(self, trial: Trial) -> EvalResult: ...
