"""What every searcher shares: the cost target and the init/propose/update protocol.

A searcher is a :class:`Searcher`: a name and three pure functions, like an optax
``GradientTransformation``::

    state = searcher.init(seed)
    archs, state = searcher.propose(state, n)      # up to n architectures to evaluate
    state = searcher.update(state, results)        # results: list[EvalResult]

States are plain JSON-able values (dicts, lists, numbers, strings) that are never
modified in place: ``propose`` and ``update`` return a new state. Saving a state with
``json.dumps`` and loading it back resumes the search exactly. Randomness is explicit:
the seed lives in the state together with a counter of draws.

``propose`` may return fewer than ``n`` architectures (even none) while it waits for
results it needs (LayerNAS finishes a layer before it starts the next one). When it
returns none and no trial is in flight, the search is over.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from layernas.evaluator import EvalResult
from layernas.space import Arch, SearchSpace, SpaceError

State = dict[str, Any]


class Searcher(NamedTuple):
    """A search strategy as pure functions. See the module docstring."""

    name: str
    init: Callable[[int], State]
    propose: Callable[[State, int], tuple[list[Arch], State]]
    update: Callable[[State, Sequence[EvalResult]], State]


@dataclasses.dataclass(frozen=True)
class Target:
    """The cost range the answer must land in, plus caps on other metrics.

    Args:
      metric: the cost metric that the target range is on (and that LayerNAS buckets by),
        for example ``"flops"``, ``"madds"``, ``"params"`` or ``"latency"``.
      max: the largest allowed cost (inclusive); None for no upper limit.
      min: the smallest allowed cost (inclusive); None for no lower limit.
      caps: upper limits on other metrics, for example ``{"params": 3.5}``.

    Example:
        >>> t = Target("flops", max=100.0, caps={"params": 1.0})
        >>> t.feasible({"flops": 90.0, "params": 0.5}), t.feasible({"flops": 120.0, "params": 0.5})
        (True, False)
    """

    metric: str
    max: float | None = None
    min: float | None = None
    caps: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name, value in [("max", self.max), ("min", self.min), *self.caps.items()]:
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"target {name} must be a finite number, got {value!r}")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"target min {self.min} is above target max {self.max}")

    def limits(self) -> list[tuple[str, float | None, float | None]]:
        """(metric, lo, hi) for the main metric and each cap."""
        out = [(self.metric, self.min, self.max)]
        out += [(m, None, float(v)) for m, v in self.caps.items()]
        return out

    def feasible(self, costs: Mapping[str, float]) -> bool:
        """Whether a complete architecture with these costs may be the answer."""
        for metric, lo, hi in self.limits():
            value = costs[metric]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                return False
        return True

    def reachable(self, space: SearchSpace, prefix: Sequence[int]) -> bool:
        """Whether some completion of ``prefix`` could be feasible, judged per metric
        from ``space.cost_bounds`` (a necessary condition, so pruning on it is safe)."""
        for metric, lo, hi in self.limits():
            cmin, cmax = space.cost_bounds(tuple(prefix), metric)
            if (hi is not None and cmin > hi) or (lo is not None and cmax < lo):
                return False
        return True

    def check(self, space: SearchSpace) -> None:
        """Raise ValueError with a one-line reason if no architecture can be feasible."""
        for metric, _, _ in self.limits():
            if metric not in space.cost_metrics:
                raise SpaceError(
                    f"unknown cost metric {metric!r} for space {space.name!r}; expected one "
                    f"of {', '.join(space.cost_metrics)}"
                )
        for metric, lo, hi in self.limits():
            cmin, cmax = space.cost_bounds((), metric)
            if hi is not None and hi < cmin:
                raise ValueError(
                    f"target {metric} <= {hi:g} is impossible: the cheapest architecture of "
                    f"{space.name!r} costs {cmin:g}"
                )
            if lo is not None and lo > cmax:
                raise ValueError(
                    f"target {metric} >= {lo:g} is impossible: the dearest architecture of "
                    f"{space.name!r} costs {cmax:g}"
                )

    def to_dict(self) -> dict:
        return {"metric": self.metric, "max": self.max, "min": self.min, "caps": dict(self.caps)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Target":
        return cls(d["metric"], d.get("max"), d.get("min"), dict(d.get("caps") or {}))


def arch_key(arch: Sequence[int]) -> str:
    """The JSON-able key of an architecture inside searcher states."""
    return ",".join(str(int(a)) for a in arch)


def key_arch(key: str) -> Arch:
    return tuple(int(a) for a in key.split(",")) if key else ()


def rng_from(state: State) -> tuple[np.random.Generator, State]:
    """A numpy Generator for the next draw, and the state with its draw counter bumped.

    The stream is a pure function of (seed, draws), so saving the state saves the RNG.
    """
    rng = np.random.default_rng([int(state["seed"]), int(state["draws"])])
    return rng, {**state, "draws": int(state["draws"]) + 1}


def feasibility_check(space: SearchSpace, target: Target) -> Callable[[Arch], bool]:
    """A cached ``arch -> target.feasible(space.cost(arch))`` for searchers that must never
    propose an architecture outside the target (the baselines know the cost model, so
    they reject infeasible architectures before evaluation, at no evaluation cost)."""
    cache: dict[Arch, bool] = {}

    def feasible(arch: Arch) -> bool:
        hit = cache.get(arch)
        if hit is None:
            hit = cache[arch] = bool(target.feasible(space.cost(arch)))
        return hit

    return feasible


def sample_feasible(
    rng: np.random.Generator,
    space: SearchSpace,
    feasible: Callable[[Arch], bool],
    *,
    exclude: set | frozenset = frozenset(),
    max_tries: int = 10_000,
) -> Arch | None:
    """A uniformly random feasible architecture whose ``arch_key`` is not in ``exclude``,
    by rejection sampling; None if ``max_tries`` draws find none. Uniform over the
    feasible, non-excluded set (rejection sampling does not bias it)."""
    for _ in range(max_tries):
        arch = space.random_arch(rng)
        if feasible(arch) and (not exclude or arch_key(arch) not in exclude):
            return arch
    return None
