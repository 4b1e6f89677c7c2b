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

from typing import Any, Callable, NamedTuple, Sequence

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
