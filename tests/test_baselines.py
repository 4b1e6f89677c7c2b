"""Every searcher (LayerNAS and the baselines) on the same protocol checks."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import layernas
from layernas.evaluator import Trial, trial_seed
from layernas.run import Budget
from layernas.searchers import SEARCHERS, make_searcher
from layernas.target import Target
from tests.toy_spaces import AdditiveEvaluator, AdditiveSpace, brute_force_best

ALL = sorted(SEARCHERS)
BASELINES = [name for name in ALL if name != "layernas"]


def toy(seed=0, layers=5, options=4):
    space = AdditiveSpace.random(np.random.default_rng(seed), layers, options)
    lo, hi = space.cost_bounds((), "cost")
    return space, Target("cost", max=lo + 0.4 * (hi - lo))


def drive(searcher, space, n, seed, batch=1, roundtrip_every=None, check_pure=False):
    """Propose/update directly; returns the list of proposed archs and the final state."""
    evaluator = AdditiveEvaluator(space)
    state = searcher.init(seed)
    proposed = []
    while len(proposed) < n:
        if roundtrip_every and len(proposed) % roundtrip_every == 0:
            state = json.loads(json.dumps(state))
        before = copy.deepcopy(state) if check_pure else None
        archs, new_state = searcher.propose(state, min(batch, n - len(proposed)))
        if check_pure:
            assert state == before, "propose modified its input state"
        state = new_state
        if not archs:
            break
        results = [evaluator.evaluate(Trial(len(proposed) + i, a, trial_seed(seed, len(proposed) + i)))
                   for i, a in enumerate(archs)]
        proposed += archs
        before = copy.deepcopy(state) if check_pure else None
        new_state = searcher.update(state, results)
        if check_pure:
            assert state == before, "update modified its input state"
        state = new_state
    return proposed, state


@pytest.mark.parametrize("name", ALL)
def test_budget_and_constraint_through_search(name):
    space, target = toy(1)
    result = layernas.search(space, AdditiveEvaluator(space), Budget(evaluations=25), target,
                             seed=3, searcher=name)
    assert result.evaluations <= 25
    assert len(result.history) == result.evaluations
    assert result.best is not None and target.feasible(result.best["costs"])
    if name in BASELINES:  # the baselines never even propose an infeasible architecture
        assert all(target.feasible(space.cost(tuple(a))) for a in map(space.str_to_arch, result.history["arch_str"]))


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("batch", [1, 3])
def test_baselines_only_propose_feasible(name, batch):
    space, target = toy(2)
    proposed, _ = drive(make_searcher(name, space, target), space, 60, seed=5, batch=batch)
    assert len(proposed) == 60
    assert all(target.feasible(space.cost(a)) for a in proposed)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_run_and_json_resume(name):
    space, target = toy(3)
    searcher = make_searcher(name, space, target)
    a, state_a = drive(searcher, space, 40, seed=11)
    b, state_b = drive(searcher, space, 40, seed=11, roundtrip_every=7)
    assert a == b
    assert json.loads(json.dumps(state_a)) == json.loads(json.dumps(state_b))
    c, _ = drive(make_searcher(name, space, target), space, 40, seed=11)
    assert a == c
    if name != "layernas":  # LayerNAS is deterministic given the rewards by design
        d, _ = drive(searcher, space, 40, seed=12)
        assert a != d


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("batch", [1, 4])
def test_states_are_json_and_never_mutated(name, batch):
    space, target = toy(4)
    _, state = drive(make_searcher(name, space, target), space, 30, seed=0, batch=batch,
                     check_pure=True)
    json.dumps(state)


def test_random_search_is_without_replacement_and_exhausts_the_feasible_set():
    space, target = toy(5, layers=3, options=3)
    feasible = {a for a in space.all_archs() if target.feasible(space.cost(a))}
    proposed, state = drive(make_searcher("random", space, target), space, 10 * len(feasible), seed=1)
    assert len(proposed) == len(set(proposed)) == len(feasible)
    assert set(proposed) == feasible
    assert state["done"]


def test_rea_mutates_one_layer():
    space, target = toy(6)
    searcher = make_searcher("rea", space, target, population=4)
    proposed, state = drive(searcher, space, 30, seed=2)
    assert len(state["population"]) == 4
    # after the random initial population, each child differs from some earlier arch in one layer
    for i in range(4, 30):
        child = np.array(proposed[i])
        assert any(int((child != np.array(p)).sum()) == 1 for p in proposed[:i])


def test_reinforce_policy_moves_towards_reward():
    # one layer whose option 2 is far better: the policy must learn to prefer it
    space = AdditiveSpace([[1, 1, 1, 1]], [[0.0, 0.0, 5.0, 0.0]])
    _, state = drive(make_searcher("reinforce", space, Target("cost")), space, 200, seed=0)
    logits = np.array(state["logits"][0])
    assert int(np.argmax(logits)) == 2


def test_rea_beats_random_on_additive_toy_on_average():
    """Mean over 12 seeds of the best feasible reward in 60 evaluations.

    Measured over 36 seeds (8 layers x 4 options, 60 evaluations): REA beats random by
    1.01 +- 0.16 (s.e.) reward units. REINFORCE's lead (0.38 +- 0.22) is too small to
    test without flakiness, so it is not asserted."""
    gaps = []
    for s in range(12):
        space, target = toy(100 + s, layers=8, options=4)
        best = {}
        for algo in ("rea", "random"):
            proposed, _ = drive(make_searcher(algo, space, target), space, 60, seed=s)
            best[algo] = max(space.reward(a) for a in proposed if target.feasible(space.cost(a)))
        gaps.append(best["rea"] - best["random"])
    assert np.mean(gaps) > 0.3
