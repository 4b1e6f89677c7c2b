"""Random search without replacement, restricted to the cost target.

Each proposal is drawn uniformly from the feasible architectures (those that satisfy
``target``) that have not been proposed before. The searcher knows the space's cost model,
so an infeasible architecture is rejected before it is ever evaluated: it costs no
evaluation and can never be the answer. Draws are by rejection sampling; when
``max_tries`` draws in a row fail (the feasible set is nearly used up) and the space has at
most ``enumerate_limit`` members, the remaining feasible architectures are enumerated and
one is drawn from them, so the search ends exactly when every feasible architecture has
been proposed.

Example:
    >>> from layernas.searchers.random_search import random_search
    >>> from layernas.target import Target
    >>> from layernas.space import Layer, SearchSpace
    >>> class Toy(SearchSpace):
    ...     name, cost_metrics = "toy", ("cost",)
    ...     layers = tuple(Layer(f"l{i}", (0, 1, 2), default=2) for i in range(3))
    ...     def cost(self, arch): return {"cost": float(sum(arch))}
    >>> searcher = random_search(Toy(), Target("cost", max=1.0))
    >>> archs, state = searcher.propose(searcher.init(0), 10)
    >>> sorted(archs)       # every feasible architecture once, then the search is over
    [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)]
"""

from __future__ import annotations

from typing import Sequence

from layernas.evaluator import EvalResult
from layernas.searchers.base import DerivedValue, Searcher, State, draws_from, feasibility_check, \
    feasible_sampler, key_arch, memo_arch_key
from layernas.target import Target
from layernas.space import Arch, SearchSpace


def random_search(
    space: SearchSpace,
    target: Target,
    *,
    max_tries: int = 1000,
    enumerate_limit: int = 1_000_000,
) -> Searcher:
    """Build the random-search baseline.

    Args:
      space: the search space.
      target: proposals always satisfy it.
      max_tries: rejection-sampling draws per proposal before falling back to enumeration.
      enumerate_limit: the largest space that is enumerated when rejection sampling fails;
        a bigger space ends the search instead.
    Returns:
      A :class:`Searcher` named ``"random"``.
    """
    target.check(space)
    feasible = feasibility_check(space, target)
    sample_feasible = feasible_sampler(space, feasible)

    def init(seed: int) -> State:
        return {"searcher": "random", "seed": int(seed), "draws": 0, "seen": [], "done": False}

    def draw(state: State, seen: set) -> tuple[Arch | None, State]:
        rng, state = draws_from(state)   # the numbers of rng_from's Generator, cheaper
        arch = sample_feasible(rng, exclude=seen, max_tries=max_tries)
        if arch is None and space.size <= enumerate_limit:
            left = [a for a in space.all_archs() if feasible(a) and a not in seen]
            arch = left[rng.integers(len(left))] if left else None
        return arch, state

    # the set of architectures of a state's "seen" keys, built once per list
    seen_sets = DerivedValue(lambda keys: {key_arch(k) for k in keys})

    def propose(state: State, n: int) -> tuple[list[Arch], State]:
        out: list[Arch] = []
        seen = seen_sets.get(state["seen"])
        new = []
        try:
            while len(out) < n and not state["done"]:
                arch, state = draw(state, seen)
                if arch is None:
                    state = {**state, "done": True}
                    break
                seen.add(arch)
                new.append(memo_arch_key(arch))
                out.append(arch)
        except BaseException:
            seen_sets.put(None, None)   # the set went ahead of its list
            raise
        if not new:
            return out, state
        keys = state["seen"] + new
        seen_sets.put(keys, seen)
        return out, {**state, "seen": keys}

    def update(state: State, results: Sequence[EvalResult]) -> State:
        return state  # the proposals do not depend on rewards

    config = {"max_tries": max_tries, "enumerate_limit": enumerate_limit}
    return Searcher("random", init, propose, update, config)
