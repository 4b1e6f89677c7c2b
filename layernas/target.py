"""The cost target: the range the answer's main cost must land in, plus caps.

A value type of the core: the run loop, the results, the searchers and the CLI all take a
:class:`Target`. It is the one place where a target's metric is checked against a space.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Mapping, Sequence

from layernas.space import SearchSpace, SpaceError


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
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"target metric must be a non-empty string such as 'flops', got {self.metric!r}")
        if not isinstance(self.caps, Mapping):
            raise TypeError(f"target caps must be a mapping of metric names to maxima, got {self.caps!r}")
        for name, value in [("max", self.max), ("min", self.min), *self.caps.items()]:
            if not isinstance(name, str):
                raise TypeError(f"target caps keys must be metric names, got {name!r}")
            if value is None and name in ("max", "min"):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"target {name} must be a number, got {value!r} ({type(value).__name__})")
            if not math.isfinite(float(value)):
                raise ValueError(f"target {name} must be a finite number, got {value!r}")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"target min {self.min} is above target max {self.max}")
        # read once: feasible() runs for every evaluated and every proposed architecture
        object.__setattr__(self, "_limits", ((self.metric, self.min, self.max),
                                             *((m, None, float(v)) for m, v in self.caps.items())))

    def limits(self) -> list[tuple[str, float | None, float | None]]:
        """(metric, lo, hi) for the main metric and each cap."""
        return list(self._limits)

    def feasible(self, costs: Mapping[str, float]) -> bool:
        """Whether a complete architecture with these costs may be the answer."""
        for metric, lo, hi in self._limits:
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
