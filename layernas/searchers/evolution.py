"""Regularized evolution (REA, Real et al. 2019) restricted to the cost target.

As in the NATS-Bench baseline scripts: the population starts with ``population``
random architectures; then each cycle draws ``tournament`` members uniformly (with
replacement), mutates the best of them by changing one randomly chosen layer to a
different option, evaluates the child, appends it to the population and removes the
oldest member (ageing, not the worst).

Constraint handling: the searcher knows the cost model, so it never proposes an
infeasible architecture. Initial members are drawn uniformly from the feasible set;
an infeasible child is discarded before evaluation and the mutation is redrawn (a
fresh tournament every ``max_tries`` failed mutations, and a random feasible
architecture if nothing else works). Duplicates are allowed, as in NATS-Bench:
a child equal to an earlier architecture is evaluated (and charged) again.

Batches: ``propose(state, n)`` may return up to ``n`` children bred from the current
population; results enter the population in the order they are given to ``update``.
Failed evaluations are dropped.
"""

from __future__ import annotations

import operator
from typing import Sequence

from layernas.evaluator import EvalResult
from layernas.searchers.base import Searcher, State, draws_from, feasibility_check, feasible_sampler, \
    key_arch, memo_arch_key
from layernas.target import Target
from layernas.space import Arch, SearchSpace

_reward = operator.itemgetter(1)   # of a population member [arch key, reward]


def regularized_evolution(
    space: SearchSpace,
    target: Target,
    *,
    population: int = 10,
    tournament: int = 3,
    max_tries: int = 100,
) -> Searcher:
    """Build the REA baseline.

    Args:
      space: the search space.
      target: proposals always satisfy it.
      population: P, the population size (NATS-Bench: 10).
      tournament: S, the tournament size (NATS-Bench: 3).
      max_tries: mutation draws per tournament before a new tournament is drawn.
    Returns:
      A :class:`Searcher` named ``"rea"``.
    """
    target.check(space)
    if population < 1 or tournament < 1:
        raise ValueError(f"population and tournament must be >= 1, got {population}, {tournament}")
    feasible = feasibility_check(space, target)
    sample_feasible = feasible_sampler(space, feasible)
    sizes = space.num_options   # read once (a property that builds a tuple)
    mutable = [i for i, k in enumerate(sizes) if k > 1]
    parents: dict[str, Arch] = {}   # arch key -> arch (a population member is a parent many times)

    def init(seed: int) -> State:
        return {"searcher": "rea", "seed": int(seed), "draws": 0,
                "population": [],   # [arch key, reward], oldest first
                "pending": 0}       # proposals not yet answered

    def mutate(rng, parent: Arch) -> Arch:
        layer = mutable[rng.integers(len(mutable))]
        option = rng.integers(sizes[layer] - 1)
        option += option >= parent[layer]   # a different option, uniformly
        return parent[:layer] + (option,) + parent[layer + 1:]

    def parent_of(key: str) -> Arch:
        arch = parents.get(key)
        if arch is None:
            arch = key_arch(key)
            if len(parents) < 1 << 16:
                parents[key] = arch
        return arch

    def child_of(rng, members: list) -> Arch:
        for _ in range(max_tries):
            picks = [members[rng.integers(len(members))] for _ in range(tournament)]
            parent = parent_of(max(picks, key=_reward)[0])   # first best on ties
            for _ in range(max_tries):
                child = mutate(rng, parent) if mutable else parent
                if feasible(child):
                    return child
        arch = sample_feasible(rng)
        if arch is None:
            raise RuntimeError(f"found no architecture of {space.name!r} inside the target")
        return arch

    def propose(state: State, n: int) -> tuple[list[Arch], State]:
        out: list[Arch] = []
        members = state["population"]
        while len(out) < n:
            rng, state = draws_from(state)   # the numbers of rng_from's Generator, cheaper
            if len(members) + state["pending"] + len(out) < population or not members:
                arch = sample_feasible(rng)
                if arch is None:
                    raise RuntimeError(f"found no architecture of {space.name!r} inside the target")
            else:
                arch = child_of(rng, members)
            out.append(arch)
        return out, {**state, "pending": state["pending"] + len(out)}

    def update(state: State, results: Sequence[EvalResult]) -> State:
        members = list(state["population"])
        for result in results:
            if result.ok:
                members.append([memo_arch_key(tuple(result.arch)), float(result.reward)])
        members = members[-population:]
        return {**state, "population": members, "pending": max(0, state["pending"] - len(results))}

    config = {"population": population, "tournament": tournament, "max_tries": max_tries}
    return Searcher("rea", init, propose, update, config)
