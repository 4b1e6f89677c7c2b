"""What every searcher shares: the init/propose/update protocol.

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

import collections
import json
import threading
import weakref
from typing import Any, Callable, Generic, NamedTuple, Sequence, TypeVar

import numpy as np

from layernas.evaluator import EvalResult
from layernas.space import Arch, SearchSpace
from layernas.target import Target

State = dict[str, Any]


class Searcher(NamedTuple):
    """A search strategy as pure functions. See the module docstring."""

    name: str
    init: Callable[[int], State]
    propose: Callable[[State, int], tuple[list[Arch], State]]
    update: Callable[[State, Sequence[EvalResult]], State]


def arch_key(arch: Sequence[int]) -> str:
    """The JSON-able key of an architecture inside searcher states."""
    return ",".join(str(int(a)) for a in arch)


def key_arch(key: str) -> Arch:
    return tuple(int(a) for a in key.split(",")) if key else ()


_STREAM_CACHE_SIZE = 1 << 16
_streams: collections.OrderedDict = collections.OrderedDict()   # (seed, draws) -> PCG64 state
_local = threading.local()


def rng_from(state: State) -> tuple[np.random.Generator, State]:
    """A numpy Generator for the next draw, and the state with its draw counter bumped.

    The stream is ``np.random.default_rng([seed, draws])``: a pure function of the state,
    so saving the state saves the RNG. Seeding costs ~12 us, so the starting points of
    recently used streams are kept (runs that share a seed share their streams), and the
    generator reuses one bit generator per thread: use it for this draw only, before the
    next ``rng_from`` call in the same thread.
    """
    key = (int(state["seed"]), int(state["draws"]))
    start = _streams.get(key)
    if start is None:
        start = np.random.PCG64(np.random.SeedSequence(list(key))).state
        _streams[key] = start
        if len(_streams) > _STREAM_CACHE_SIZE:
            _streams.popitem(last=False)
    bits = getattr(_local, "bits", None)
    if bits is None:
        bits = _local.bits = np.random.PCG64(0)
    bits.state = start
    return np.random.Generator(bits), {**state, "draws": key[1] + 1}


_T = TypeVar("_T")


class DerivedValue(Generic[_T]):
    """A one-entry cache of a value derived from an immutable state part, keyed by the
    part's identity (states are never modified in place, so the same object always
    derives the same value). It keeps a reference to the part, so the identity cannot be
    reused while cached.

    Example:
        >>> seen = DerivedValue(set)
        >>> keys = ["0,1", "1,1"]
        >>> seen.get(keys) == {"0,1", "1,1"} and seen.get(keys) is seen.get(keys)
        True
    """

    def __init__(self, derive: Callable[[Any], _T]):
        self.derive = derive
        self._part: Any = None
        self._value: _T | None = None

    def get(self, part: Any) -> _T:
        if part is not self._part or self._value is None:
            self._value = self.derive(part)
            self._part = part
        return self._value

    def put(self, part: Any, value: _T) -> None:
        """Record ``value`` as derived from ``part`` (a state part just built)."""
        self._part, self._value = part, value


_feasible_caches: "weakref.WeakKeyDictionary[SearchSpace, dict[str, dict]]" = weakref.WeakKeyDictionary()


def feasibility_check(space: SearchSpace, target: Target) -> Callable[[Arch], bool]:
    """A cached ``arch -> target.feasible(space.cost(arch))`` for searchers that must never
    propose an architecture outside the target (the baselines know the cost model, so
    they reject infeasible architectures before evaluation, at no evaluation cost).
    Searchers built for the same space object and an equal target share the cache."""
    try:
        per_space = _feasible_caches.setdefault(space, {})
    except TypeError:   # a space that cannot be weakly referenced: a private cache
        per_space = {}
    cache: dict[Arch, bool] = per_space.setdefault(json.dumps(target.to_dict(), sort_keys=True), {})

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
    """A uniformly random feasible architecture not in ``exclude`` (a set of architecture
    tuples), by rejection sampling; None if ``max_tries`` draws find none. Uniform over the
    feasible, non-excluded set (rejection sampling does not bias it). Draws exactly what
    ``space.random_arch(rng)`` draws."""
    if type(space).random_arch is SearchSpace.random_arch:
        sizes = space.num_options   # the default sampler, with its sizes read once
        integers = rng.integers

        def draw() -> Arch:
            return tuple([int(integers(n)) for n in sizes])
    else:
        def draw() -> Arch:
            return space.random_arch(rng)
    for _ in range(max_tries):
        arch = draw()
        if feasible(arch) and arch not in exclude:
            return arch
    return None
