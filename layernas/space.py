"""The search-space protocol.

An architecture is a tuple of option indices, one per layer (``Arch``). A search space
is data (its layers and their options) plus pure functions of an architecture:

* ``cost(arch) -> dict[str, float]``: every cost metric the space knows;
* ``cost_bounds(prefix, metric) -> (lo, hi)``: min/max of a metric over all completions
  of a prefix (the layers after the prefix are free);
* ``arch_to_str`` / ``str_to_arch``: a stable text form (NATS spaces use the official
  NATS arch strings);
* ``describe(arch)``: a human-readable, per-layer description.

A space holds no model: the trainers turn a trainable space's architecture into a flax
module (``layernas.trainers.models.build_model(space, arch)``).

Subclass :class:`SearchSpace` and fill in ``layers`` and ``cost``; everything else has
a generic implementation that a space may override when it knows better (for example a
closed form for ``cost_bounds``).

Example:
    >>> from layernas.space import Layer, SearchSpace
    >>> class Burger(SearchSpace):
    ...     name = "burger"
    ...     layers = (Layer("bun", ("plain", "sesame"), default=1),
    ...               Layer("patty", ("veg", "beef"), default=1))
    ...     cost_metrics = ("dollars",)
    ...     def cost(self, arch):
    ...         return {"dollars": float(1 + arch[0] + 2 * arch[1])}
    >>> space = Burger()
    >>> space.cost_bounds((0,), "dollars")
    (1.0, 3.0)
    >>> space.str_to_arch(space.arch_to_str((0, 1)))
    (0, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from typing import Any, Iterator, Sequence

import numpy as np

Arch = tuple[int, ...]
Costs = dict[str, float]

# Above this many completions, cost_bounds stops enumerating and assumes that each
# layer's cost effect is monotone in its own option (see SearchSpace.cost_bounds).
MAX_ENUMERATED_COMPLETIONS = 4096


class SpaceError(ValueError):
    """An architecture or string that does not belong to the space."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One searchable layer (a decision point).

    Args:
      name: a short, unique name for the decision (for example ``"edge_1<-0"``).
      options: the JSON-able values this layer can take; the architecture stores the
        index into this tuple.
      default: index of the option used while this layer is not yet searched. The
        LayerNAS paper uses the most expensive option; each space documents its choice.
    """

    name: str
    options: tuple[Any, ...]
    default: int = 0

    def __post_init__(self):
        if not self.options:
            raise SpaceError(f"layer {self.name!r} has no options")
        if not 0 <= self.default < len(self.options):
            raise SpaceError(
                f"layer {self.name!r}: default {self.default} is not an option index "
                f"in [0, {len(self.options)})"
            )


class SearchSpace:
    """Base class of every search space. See the module docstring."""

    name: str = "space"
    layers: tuple[Layer, ...] = ()
    cost_metrics: tuple[str, ...] = ()

    # --- what a subclass provides -------------------------------------------------
    def cost(self, arch: Arch) -> Costs:
        """Every cost metric of a complete architecture, keyed by metric name."""
        raise NotImplementedError

    # --- generic structure --------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_options(self) -> tuple[int, ...]:
        return tuple(len(layer.options) for layer in self.layers)

    @property
    def size(self) -> int:
        """Number of architectures in the space."""
        return int(np.prod([float(n) for n in self.num_options])) if self.layers else 0

    def default_arch(self) -> Arch:
        return tuple(layer.default for layer in self.layers)

    def validate(self, arch: Sequence[int], *, prefix: bool = False) -> Arch:
        """Return ``arch`` as a tuple of ints, or raise SpaceError naming the bad value."""
        arch = tuple(int(a) for a in arch)
        if (len(arch) > self.num_layers) if prefix else (len(arch) != self.num_layers):
            raise SpaceError(
                f"architecture {arch} has {len(arch)} layers; space {self.name!r} has "
                f"{self.num_layers}"
            )
        for i, (a, n) in enumerate(zip(arch, self.num_options)):
            if not 0 <= a < n:
                raise SpaceError(
                    f"architecture {arch}: option {a} at layer {i} ({self.layers[i].name!r}) "
                    f"is not in [0, {n})"
                )
        return arch

    def complete(self, prefix: Sequence[int]) -> Arch:
        """The prefix followed by the default option of every later layer."""
        prefix = tuple(prefix)
        return prefix + self.default_arch()[len(prefix):]

    def all_archs(self) -> Iterator[Arch]:
        return itertools.product(*(range(n) for n in self.num_options))

    def random_arch(self, rng: np.random.Generator) -> Arch:
        return tuple(int(rng.integers(n)) for n in self.num_options)

    # --- cost bounds --------------------------------------------------------------
    def cost_bounds(self, prefix: Sequence[int], metric: str) -> tuple[float, float]:
        """Min and max of ``metric`` over every completion of ``prefix``.

        The generic version enumerates the completions when there are at most
        MAX_ENUMERATED_COMPLETIONS of them. Beyond that it assumes each remaining layer
        moves the cost monotonically in the same direction whatever the others are, and
        picks per layer the option that is cheapest (dearest) when every other free layer
        keeps its default. Spaces with a closed form override this.

        Args:
          prefix: option indices of the first ``len(prefix)`` layers.
          metric: one of ``cost_metrics``.
        Returns:
          ``(lo, hi)``.
        """
        prefix = self.validate(prefix, prefix=True)
        self._check_metric(metric)
        free = self.num_options[len(prefix):]
        if int(np.prod([float(n) for n in free])) <= MAX_ENUMERATED_COMPLETIONS:
            values = [
                self.cost(prefix + rest)[metric]
                for rest in itertools.product(*(range(n) for n in free))
            ]
            return float(min(values)), float(max(values))
        base = list(self.complete(prefix))
        lo_arch, hi_arch = list(base), list(base)
        for i in range(len(prefix), self.num_layers):
            values = []
            for o in range(self.num_options[i]):
                trial = list(base)
                trial[i] = o
                values.append(self.cost(tuple(trial))[metric])
            lo_arch[i] = int(np.argmin(values))
            hi_arch[i] = int(np.argmax(values))
        return float(self.cost(tuple(lo_arch))[metric]), float(self.cost(tuple(hi_arch))[metric])

    def _check_metric(self, metric: str) -> None:
        if metric not in self.cost_metrics:
            raise SpaceError(
                f"unknown cost metric {metric!r} for space {self.name!r}; expected one of "
                f"{', '.join(self.cost_metrics)}"
            )

    # --- text forms ---------------------------------------------------------------
    def arch_to_str(self, arch: Sequence[int]) -> str:
        """A stable text form. The generic form is the indices joined by '-'."""
        return "-".join(str(a) for a in self.validate(arch))

    def str_to_arch(self, text: str) -> Arch:
        """Inverse of ``arch_to_str``; raises SpaceError naming the bad text."""
        try:
            arch = tuple(int(t) for t in text.strip().split("-"))
        except ValueError:
            raise SpaceError(
                f"cannot parse architecture {text!r}: expected {self.num_layers} option "
                f"indices joined by '-'"
            ) from None
        return self.validate(arch)

    def describe(self, arch: Sequence[int]) -> str:
        """One line per layer: name, chosen option, then the costs."""
        arch = self.validate(arch)
        lines = [f"{self.name}: {self.arch_to_str(arch)}"]
        width = max((len(layer.name) for layer in self.layers), default=0)
        for layer, a in zip(self.layers, arch):
            marker = "" if a == layer.default else "  *"
            lines.append(f"  {layer.name:<{width}}  {layer.options[a]!r}{marker}")
        costs = self.cost(arch)
        lines.append("  costs: " + ", ".join(f"{k}={v:.6g}" for k, v in costs.items()))
        return "\n".join(lines)

    def to_json(self) -> str:
        """The space as data: its name, metrics and layers with options and defaults."""
        return json.dumps(
            {
                "name": self.name,
                "cost_metrics": list(self.cost_metrics),
                "layers": [
                    {"name": l.name, "options": list(l.options), "default": l.default}
                    for l in self.layers
                ],
            }
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.num_layers} layers, {self.size} archs>"


class NamedOptionStrings:
    """Mixin for spaces whose text form names every layer: ``name=value`` parts joined by
    ``-`` (for example ``M=192-hs0_width=128-...``), and a by-name option lookup.

    Put it before :class:`SearchSpace` in the bases. Option values must print without ``-``.
    """

    @functools.cached_property
    def _layer_index(self) -> dict[str, int]:
        # built once per space: config() and cost() look layers up by name on every call
        return {layer.name: i for i, layer in enumerate(self.layers)}

    def option(self, arch: Sequence[int], name: str) -> Any:
        """The option value that ``arch`` picks for the layer called ``name``."""
        if name not in self._layer_index:
            raise SpaceError(f"space {self.name!r} has no layer {name!r}")
        i = self._layer_index[name]
        return self.layers[i].options[arch[i]]

    def arch_to_str(self, arch: Sequence[int]) -> str:
        """``name=value`` per layer joined by '-': readable, parsed back by :meth:`str_to_arch`."""
        arch = self.validate(arch)
        return "-".join(f"{layer.name}={layer.options[a]}" for layer, a in zip(self.layers, arch))

    def str_to_arch(self, text: str) -> Arch:
        """Inverse of :meth:`arch_to_str`; raises SpaceError naming the bad part."""
        parts = text.strip().split("-")
        if len(parts) != self.num_layers:
            raise SpaceError(f"cannot parse {self.name} arch {text!r}: expected {self.num_layers} 'name=value' parts")
        arch = []
        for layer, part in zip(self.layers, parts):
            name, _, value = part.partition("=")
            if name != layer.name:
                raise SpaceError(f"{self.name} arch {text!r}: part {part!r} should name layer {layer.name!r}")
            matches = [i for i, opt in enumerate(layer.options) if str(opt) == value]
            if not matches:
                raise SpaceError(f"{self.name} arch {text!r}: {value!r} is not an option of {layer.name!r} "
                                 f"{layer.options}")
            arch.append(matches[0])
        return tuple(arch)
