"""LayerNAS's options (fill, repair, bucket_by, candidate_order, when_exhausted, warm_start, dives, presets): every one respects
the target and the evaluation budget, is deterministic with a seed and resumes exactly from a
saved state; the paper's preset reproduces the committed NATS comparison."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import layernas
from layernas.evaluator import EvalResult
from layernas.searchers.base import arch_key
from layernas.searchers.layernas import (BUCKET_BYS, CANDIDATE_ORDERS, FILLS, PRESETS, WHEN_EXHAUSTED,
                                         Completion, layernas as make_layernas)
from layernas.target import Target
from benchmark_modules import load_benchmark
from toy_spaces import AdditiveEvaluator, AdditiveSpace, brute_force_best

REPO = Path(__file__).resolve().parents[1]
OPTION_GRID = [dict(fill=f, repair=r, bucket_by=b, candidate_order=o, **({"warm_start": 3} if f == "sampled" else {}))
               for f, r, b, o in itertools.product(FILLS, (False, True), BUCKET_BYS, CANDIDATE_ORDERS)]
OPTION_IDS = [f"{o['fill']}{'+repair' if o['repair'] else ''}/{o['bucket_by']}/{o['candidate_order']}"
              for o in OPTION_GRID]


def toy(seed=3, layers=5, options=4):
    return AdditiveSpace.random(np.random.default_rng(seed), layers, options, max_cost=9)


def trace_of(searcher, space, seed=0, batch=2, limit=400):
    """Drive a searcher in memory; returns (proposed archs in order, final state)."""
    state, proposed = searcher.init(seed), []
    for _ in range(limit):
        archs, state = searcher.propose(state, batch)
        assert len(archs) <= batch, "proposed more than asked for"
        if not archs:
            break
        proposed += archs
        state = searcher.update(state, [EvalResult(i, a, space.reward(a), 1.0) for i, a in enumerate(archs)])
    return proposed, state


def resumed_trace(make_searcher, space, seed, stop_at, batch=2):
    """Drive ``make_searcher()`` for ``stop_at`` proposals (``batch`` at a time), save its state
    as JSON, load it into a new searcher (a new process: empty caches) and go on to the end;
    returns every architecture proposed, in order."""
    searcher = make_searcher()
    state, proposed = searcher.init(seed), []
    while len(proposed) < stop_at:
        archs, state = searcher.propose(state, batch)
        if not archs:
            break
        proposed += archs
        state = searcher.update(state, [EvalResult(i, a, space.reward(a), 1.0) for i, a in enumerate(archs)])
    state = json.loads(json.dumps(state))
    fresh = make_searcher()
    while True:
        archs, state = fresh.propose(state, 2)
        if not archs:
            return proposed
        proposed += archs
        state = fresh.update(state, [EvalResult(i, a, space.reward(a), 1.0) for i, a in enumerate(archs)])


@pytest.mark.parametrize("options", OPTION_GRID, ids=OPTION_IDS)
@pytest.mark.parametrize("budget", [1, 7, 40])
def test_every_option_respects_target_and_evaluation_budget(options, budget):
    space = toy()
    lo, hi = space.cost_bounds((), "cost")
    target = Target("cost", max=lo + 0.3 * (hi - lo))
    result = layernas.search(space, AdditiveEvaluator(space), budget=budget, target=target,
                             searcher_options=options, max_in_flight=3)
    assert len(result.history) <= budget
    feasible = result.history[result.history.feasible]
    assert (feasible.cost_cost <= target.max).all()
    if result.best is not None:
        assert result.best["costs"]["cost"] <= target.max
    if options["repair"]:  # every model evaluated is feasible
        assert result.history.feasible.all()
    if options["fill"] in ("in_target", "cheapest") and budget >= space.num_options[0]:
        # the all-default model is one of the first layer's children, and it is feasible
        # (the paper's fill may need many more evaluations)
        assert result.history.feasible.iloc[: space.num_options[0]].any()


@pytest.mark.parametrize("options", OPTION_GRID, ids=OPTION_IDS)
def test_every_option_is_deterministic_and_resumes_from_a_saved_state(options):
    space = toy(seed=11)
    target = Target("cost", min=4.0, max=14.0)
    searcher = make_layernas(space, target, **options)
    whole, _ = trace_of(searcher, space, seed=5)
    again, _ = trace_of(make_layernas(space, target, **options), space, seed=5)
    assert whole == again
    # stop after k proposals, save the state as JSON, load it and go on
    for stop in (1, 5, len(whole) // 2):
        assert resumed_trace(lambda: make_layernas(space, target, **options), space, 5, stop) == whole


def test_run_loop_resume_is_exact(tmp_path):
    space = toy(seed=2)
    target = Target("cost", max=15.0)
    full = layernas.search(space, AdditiveEvaluator(space), budget=30, target=target)
    layernas.search(space, AdditiveEvaluator(space), budget=12, target=target, out_dir=tmp_path)
    resumed = layernas.search(space, AdditiveEvaluator(space), budget=30, target=target,
                              out_dir=tmp_path, resume=True)
    assert resumed.history.arch_str.tolist() == full.history.arch_str.tolist()


def test_fill_rules_give_the_documented_default_architectures():
    costs = [[1, 5, 3], [2, 2, 0], [4, 1, 6]]
    space = AdditiveSpace(costs, [[0] * 3] * 3, default="min")
    target = Target("cost", max=9.0)
    c = Completion(space, target)
    assert c.default_arch("space") == space.default_arch() == (0, 2, 1)
    assert c.default_arch("dearest") == (1, 1, 2)   # ties (2, 2) go to the higher index
    assert c.default_arch("cheapest") == (0, 2, 1)
    # 5+2+6=13 > 9: the last layer steps down first (6 -> 4), then the middle one (2 -> 0)
    assert c.default_arch("in_target") == (1, 2, 0)
    # repair keeps the searched prefix and only moves the later layers
    assert c.repair((1, 1, 2), 1)[:1] == (1,) and target.feasible(space.cost(c.repair((1, 1, 2), 1)))
    assert c.repair((0, 2, 1), 0) == (0, 2, 1)        # already feasible: unchanged


@pytest.mark.parametrize("fill", FILLS)
def test_repair_evaluates_only_feasible_models_on_an_additive_space(fill):
    space = toy(seed=4, layers=6, options=4)
    lo, hi = space.cost_bounds((), "cost")
    target = Target("cost", max=lo + 0.35 * (hi - lo))
    proposed, _ = trace_of(make_layernas(space, target, fill=fill, repair=True,
                                         warm_start=3 if fill == "sampled" else None), space)
    assert proposed and all(target.feasible(space.cost(a)) for a in proposed)


def test_repair_also_steps_down_for_a_cap_on_another_metric():
    class TwoCost(AdditiveSpace):
        cost_metrics = ("cost", "params")

        def cost(self, arch):
            return {"cost": super().cost(arch)["cost"], "params": float(sum(arch))}

    costs = [[0, 1, 2, 3]] * 4
    space = TwoCost(costs, np.random.default_rng(2).normal(size=(4, 4)).round(3).tolist())
    target = Target("cost", max=100.0, caps={"params": 5.0})   # only the cap binds
    proposed, _ = trace_of(make_layernas(space, target, repair=True), space)
    assert proposed and all(target.feasible(space.cost(a)) for a in proposed)
    paper, _ = trace_of(make_layernas(space, target, preset="paper"), space)
    assert not all(target.feasible(space.cost(a)) for a in paper)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_static_fills_keep_the_layerwise_optimum_on_additive_spaces(preset):
    """With one bucket per distinct cost and no repair, every static fill finds the brute-force
    optimum of an additive space (the layerwise argument holds)."""
    for seed in range(8):
        space = AdditiveSpace.random(np.random.default_rng(seed), 4, 3)
        lo, hi = space.cost_bounds((), "cost")
        target = Target("cost", max=float(np.floor(lo + 0.5 * (hi - lo))))
        edges = list(np.arange(lo - 0.5, hi + 1.0, 1.0))
        for fill in FILLS:
            searcher = make_layernas(space, target, preset=preset, fill=fill, repair=False,
                                     bucket_edges=edges, warm_start=3 if fill == "sampled" else None)
            proposed, _ = trace_of(searcher, space)
            best = max(space.reward(a) for a in proposed if target.feasible(space.cost(a)))
            assert best == pytest.approx(brute_force_best(space, target)), (seed, fill)


@pytest.mark.parametrize("bad, message", [
    (dict(preset="fast"), "preset must be one of 'paper', 'efficient', got 'fast'"),
    (dict(fill="median"), "fill must be one of"),
    (dict(repair="yes"), "repair must be True or False, got 'yes'"),
    (dict(when_exhausted="again"), "when_exhausted must be one of 'stop', 'refine', 'mutate', got 'again'"),
    (dict(warm_start=-1), "warm_start must be an integer >= 0, got -1"),
    (dict(warm_start=2.5), "warm_start must be an integer >= 0, got 2.5"),
    (dict(fill="sampled", warm_start=0), "fill=.sampled. takes the best of the warm_start models: warm_start must be >= 1, got 0"),
])
def test_bad_options_name_the_value(bad, message):
    with pytest.raises(ValueError, match=message):
        make_layernas(toy(), Target("cost", max=20), **bad)


def test_a_state_saved_before_warm_start_resumes_as_it_was():
    """A search saved by a version without ``warm_start`` resumes under the default preset
    without a warm start: the proposals go on as the saved search would have."""
    space = toy(seed=6)
    target = toy_target(space)
    old = make_layernas(space, target, warm_start=0)
    state = old.init(0)
    for _ in range(3):
        archs, state = old.propose(state, 2)
        state = old.update(state, [EvalResult(i, a, space.reward(a), 1.0) for i, a in enumerate(archs)])
    assert "sampling" not in state
    saved = json.loads(json.dumps(state))
    assert make_layernas(space, target).propose(saved, 3)[0] == old.propose(state, 3)[0]


def test_a_state_saved_before_sharding_still_resumes():
    space = toy(seed=6)
    target = Target("cost", max=16.0)
    searcher = make_layernas(space, target)
    state = searcher.init(0)
    for _ in range(4):
        archs, state = searcher.propose(state, 2)
        state = searcher.update(state, [EvalResult(i, a, space.reward(a), 1.0) for i, a in enumerate(archs)])
    old = {**state, "known": {k: v for shard in state["known"] for k, v in shard.items()}}
    assert searcher.propose(old, 3)[0] == searcher.propose(state, 3)[0]


# --- when_exhausted: what happens after the layerwise search ---------------------------------

EXHAUSTED_GRID = [dict(when_exhausted=w, repair=r, fill=f, num_buckets=h)
                  for w in ("refine", "mutate") for r, f in ((True, "space"), (False, "space"), (False, "in_target"))
                  for h in (100, 3)]
EXHAUSTED_IDS = [f"{o['when_exhausted']}-{o['fill']}{'+repair' if o['repair'] else ''}-H{o['num_buckets']}"
                 for o in EXHAUSTED_GRID]


def toy_target(space, fraction=0.4):
    lo, hi = space.cost_bounds((), "cost")
    return Target("cost", max=lo + fraction * (hi - lo))


@pytest.mark.parametrize("options", EXHAUSTED_GRID, ids=EXHAUSTED_IDS)
@pytest.mark.parametrize("budget", [1, 7, 40, 300])
def test_when_exhausted_respects_target_and_evaluation_budget(options, budget):
    space = toy(seed=8, layers=5, options=4)
    target = toy_target(space)
    stop = layernas.search(space, AdditiveEvaluator(space), budget=budget, target=target,
                           searcher_options={**options, "when_exhausted": "stop"}, max_in_flight=3)
    result = layernas.search(space, AdditiveEvaluator(space), budget=budget, target=target,
                             searcher_options=options, max_in_flight=3)
    history = result.history
    assert len(history) <= budget
    assert history.arch_str.is_unique, "an architecture was evaluated twice"
    if result.best is not None:
        assert result.best["costs"]["cost"] <= target.max
    # everything after the layerwise search is feasible (mutants are; a refined pass repairs
    # exactly as the first one does)
    extra = history.iloc[len(stop.history):]
    if options["repair"] or options["when_exhausted"] == "mutate":
        assert extra.feasible.all()
    if stop.stopped_early:  # the layerwise search ended inside the budget: the rest is used
        assert len(history) > len(stop.history)
        assert result.best["reward"] >= stop.best["reward"]


@pytest.mark.parametrize("options", EXHAUSTED_GRID, ids=EXHAUSTED_IDS)
def test_when_exhausted_is_deterministic_resumes_and_starts_with_the_layerwise_search(options):
    space = toy(seed=12, layers=4, options=4)
    target = toy_target(space, 0.5)
    stop, _ = trace_of(make_layernas(space, target, **{**options, "when_exhausted": "stop"}), space, seed=3)
    searcher = make_layernas(space, target, **options)
    whole, final = trace_of(searcher, space, seed=3)
    assert whole == trace_of(make_layernas(space, target, **options), space, seed=3)[0]
    assert whole[:len(stop)] == stop and len(whole) > len(stop)
    assert len(set(whole)) == len(whole)
    assert final["done"]
    for stop_at in (len(stop) - 1, len(stop) + 1, (len(stop) + len(whole)) // 2, len(whole) - 1):
        assert resumed_trace(lambda: make_layernas(space, target, **options), space, 3, stop_at) == whole, stop_at


def test_refine_pass_evaluates_what_finer_wider_tables_keep():
    """Pass 1 of ``refine`` is LayerNAS with every bucket split in two and one more child kept
    per bucket, minus what was evaluated before: its evaluations contain the plain search's
    with those parameters, and the searcher only ends after a pass that evaluates nothing new."""
    for seed in range(6):
        space = AdditiveSpace.random(np.random.default_rng(seed), 4, 4, max_cost=8)
        target = toy_target(space, 0.5)
        edges = [0.0, 8.0, 16.0, 24.0, 32.0]
        split = [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0]
        coarse, _ = trace_of(make_layernas(space, target, bucket_edges=edges, when_exhausted="stop"), space)
        finer, _ = trace_of(make_layernas(space, target, bucket_edges=split, per_bucket=2,
                                          when_exhausted="stop"), space)
        refined, state = trace_of(make_layernas(space, target, bucket_edges=edges, when_exhausted="refine"),
                                  space, limit=2000)
        assert set(refined) >= set(coarse) | set(finer), seed
        assert state["done"] and state["pass"] >= 2 and state["trained"] == state["pass_start"] == len(refined)
        best = max(space.reward(a) for a in refined if target.feasible(space.cost(a)))
        assert best >= max(space.reward(a) for a in finer if target.feasible(space.cost(a)))


def test_mutate_proposes_one_layer_mutants_until_the_neighbourhood_is_closed():
    space = toy(seed=5, layers=4, options=3)
    target = toy_target(space, 0.45)
    stop, _ = trace_of(make_layernas(space, target, when_exhausted="stop"), space)
    whole, state = trace_of(make_layernas(space, target), space, batch=1, limit=5000)  # the default: mutate
    assert state["done"] and state["phase"] == "mutate"
    seen = set(stop)
    for arch in whole[len(stop):]:
        assert target.feasible(space.cost(arch)) and arch not in seen
        parents = [a for a in seen if target.feasible(space.cost(a))
                   and sum(x != y for x, y in zip(a, arch)) == 1]
        assert parents, arch
        # the parent is the best evaluated feasible model that still had an unevaluated mutant
        best_open = max((a for a in seen if target.feasible(space.cost(a)) and any(
            (a[:i] + (o,) + a[i + 1:]) not in seen and target.feasible(space.cost(a[:i] + (o,) + a[i + 1:]))
            for i in range(space.num_layers) for o in range(space.num_options[i]))),
            key=lambda a: (space.reward(a), -space.cost(a)["cost"]))
        assert sum(x != y for x, y in zip(best_open, arch)) == 1
        seen.add(arch)
    # closed: no evaluated feasible model has an unevaluated feasible one-layer mutant
    for a in seen:
        if target.feasible(space.cost(a)):
            for i in range(space.num_layers):
                for o in range(space.num_options[i]):
                    m = a[:i] + (o,) + a[i + 1:]
                    assert m in seen or not target.feasible(space.cost(m))


def test_the_paper_preset_stops_when_exhausted_and_its_state_is_unchanged():
    assert PRESETS["paper"]["when_exhausted"] == "stop" and PRESETS["efficient"]["when_exhausted"] == "mutate"
    assert set(WHEN_EXHAUSTED) == {"stop", "refine", "mutate"}
    space = toy(seed=9)
    target = toy_target(space)
    state = make_layernas(space, target, preset="paper").init(0)
    assert "pass" not in state and "phase" not in state  # saved states of the paper preset unchanged
    assert "sampling" not in state and "root" not in state
    assert PRESETS["paper"]["warm_start"] == 0


# --- warm_start and fill="sampled": random feasible models before the layerwise search -------

WARM_GRID = [dict(warm_start=k, fill=f, repair=r, when_exhausted=w)
             for k in (1, 4) for f, r in (("space", True), ("space", False), ("sampled", True), ("sampled", False))
             for w in ("stop", "mutate")]
WARM_IDS = [f"W{o['warm_start']}-{o['fill']}{'+repair' if o['repair'] else ''}-{o['when_exhausted']}"
            for o in WARM_GRID]


def checked_toy_search(options: dict, budget: int, space_seed: int):
    """A search of a 5-layer toy space, three trials in flight, checked for what every option
    promises: within the budget, no architecture twice, only feasible models when repairing.
    Returns the result and the target."""
    space = toy(seed=space_seed, layers=5, options=4)
    target = toy_target(space)
    result = layernas.search(space, AdditiveEvaluator(space), budget=budget, target=target,
                             searcher_options=options, max_in_flight=3)
    history = result.history
    assert len(history) <= budget
    assert history.arch_str.is_unique, "an architecture was evaluated twice"
    assert (history[history.feasible].cost_cost <= target.max).all()
    if options["repair"]:
        assert history.feasible.all()
    return result, target


@pytest.mark.parametrize("options", WARM_GRID, ids=WARM_IDS)
@pytest.mark.parametrize("budget", [1, 3, 7, 40, 300])
def test_warm_start_respects_target_and_evaluation_budget(options, budget):
    result, target = checked_toy_search(options, budget, space_seed=8)
    history = result.history
    # the warm start is feasible: an answer from the first evaluation on
    assert history.feasible.iloc[: options["warm_start"]].all()
    assert result.best is not None and result.best["costs"]["cost"] <= target.max


@pytest.mark.parametrize("options", WARM_GRID, ids=WARM_IDS)
def test_warm_start_is_deterministic_and_resumes_from_a_saved_state(options):
    space = toy(seed=12, layers=4, options=4)
    target = toy_target(space, 0.5)
    searcher = make_layernas(space, target, **options)
    whole, final = trace_of(searcher, space, seed=3, limit=2000)
    assert whole == trace_of(make_layernas(space, target, **options), space, seed=3, limit=2000)[0]
    other, _ = trace_of(make_layernas(space, target, **options), space, seed=4, limit=2000)
    assert whole[: options["warm_start"]] != other[: options["warm_start"]]   # the seed draws them
    assert final["done"] and not final["sampling"] and len(set(whole)) == len(whole)
    k = options["warm_start"]
    for stop_at in sorted({1, k - 1, k, k + 1, len(whole) // 2, len(whole) - 1} - {0}):
        # one at a time before the stop: it can fall anywhere, inside the warm start too
        assert resumed_trace(lambda: make_layernas(space, target, **options), space, 3, stop_at, batch=1) == whole, \
            stop_at


def test_warm_start_comes_first_and_leaves_the_layerwise_search_as_it_was():
    """The warm start is ``k`` distinct feasible models, each drawn from its own seeded stream;
    then the plain search's proposals follow in the same order, less those already evaluated."""
    space = toy(seed=5, layers=5, options=4)
    target = toy_target(space, 0.45)
    for options in (dict(preset="paper"), dict(when_exhausted="stop")):
        plain, _ = trace_of(make_layernas(space, target, **options, warm_start=0), space, batch=1)
        for k in (1, 5, 12):
            warm, state = trace_of(make_layernas(space, target, **options, warm_start=k), space, batch=3)
            head = warm[:k]
            assert len(set(head)) == k and all(target.feasible(space.cost(a)) for a in head)
            assert warm[k:] == [a for a in plain if a not in head]
            assert state["samples"] == [arch_key(a) for a in head] and not state["sampling"]


def test_warm_start_stops_short_when_the_target_has_fewer_models():
    costs = [[0, 5, 9], [0, 5, 9]]
    space = AdditiveSpace(costs, [[0.0, 1.0, 2.0], [0.5, 0.1, 0.3]], default="max")
    target = Target("cost", max=5.0)   # feasible: (0,0), (0,1), (1,0)
    proposed, state = trace_of(make_layernas(space, target, warm_start=10, when_exhausted="stop"), space)
    assert set(proposed[:3]) == {(0, 0), (0, 1), (1, 0)} and state["sample_target"] == 3
    assert state["done"] and not state["sampling"]


def test_warm_start_draws_layer_by_layer_where_uniform_draws_miss_the_target():
    """12 layers, 4 options: 79 of the 4**12 models are inside the target (at most two layers
    at option 1, the rest at 0), so uniform draws miss; the layer-by-layer draw finds them."""
    space = AdditiveSpace([[0, 1, 10, 10]] * 12, np.random.default_rng(0).normal(size=(12, 4)).round(3).tolist())
    target = Target("cost", max=2.0)
    searcher = make_layernas(space, target, warm_start=5, when_exhausted="stop")
    proposed, state = trace_of(searcher, space, seed=1, limit=20)
    head = proposed[:5]
    assert len(set(head)) == 5 and all(target.feasible(space.cost(a)) for a in head)
    assert state["sample_target"] == 5 and not state["sampling"]
    assert trace_of(make_layernas(space, target, warm_start=5, when_exhausted="stop"), space, seed=1,
                    limit=20)[0] == proposed


def test_sampled_fill_starts_the_layerwise_search_from_the_best_warm_start_model():
    space = toy(seed=7, layers=5, options=4)
    target = toy_target(space, 0.5)
    for seed in range(4):
        searcher = make_layernas(space, target, fill="sampled", warm_start=6, repair=False,
                                 when_exhausted="stop")
        proposed, state = trace_of(searcher, space, seed=seed, batch=2)
        head = proposed[:6]
        best = max(head, key=lambda a: (space.reward(a), -space.cost(a)["cost"]))
        assert tuple(state["root"]) == best
        # the first layer's children are the best model with layer 0 changed (the model itself
        # was evaluated in the warm start and is not proposed again)
        children = [best[:0] + (o,) + best[1:] for o in range(space.num_options[0])]
        assert proposed[6: 6 + space.num_options[0] - 1] == [c for c in children if c != best]


# --- dives: greedy passes through the layers before the layer-by-layer rounds ---------------

DIVE_GRID = [dict(dives=d, warm_start=k, fill=f, repair=r, when_exhausted=w)
             for d in (1, 2) for k in (0, 3)
             for f, r in (("space", True), ("space", False), ("in_target", False), ("sampled", True))
             for w in ("stop", "mutate") if k or f != "sampled"]   # "sampled" needs a warm start
DIVE_IDS = [f"D{o['dives']}-W{o['warm_start']}-{o['fill']}{'+repair' if o['repair'] else ''}-{o['when_exhausted']}"
            for o in DIVE_GRID]


@pytest.mark.parametrize("options", DIVE_GRID, ids=DIVE_IDS)
@pytest.mark.parametrize("budget", [1, 6, 40, 300])
def test_dives_respect_target_and_evaluation_budget(options, budget):
    result, target = checked_toy_search(options, budget, space_seed=9)
    if budget >= 6 and options["repair"]:
        assert result.best is not None


@pytest.mark.parametrize("options", DIVE_GRID, ids=DIVE_IDS)
def test_dives_are_deterministic_and_resume_from_a_saved_state(options):
    space = toy(seed=13, layers=4, options=4)
    target = toy_target(space, 0.5)
    whole, final = trace_of(make_layernas(space, target, **options), space, seed=2, limit=2000)
    assert whole == trace_of(make_layernas(space, target, **options), space, seed=2, limit=2000)[0]
    assert final["done"] and final["diving"] == 0
    for stop_at in sorted({1, 3, 6, 10, len(whole) // 2, len(whole) - 1}):
        # one at a time before the stop, so it falls inside the dive too
        assert resumed_trace(lambda: make_layernas(space, target, **options), space, 2, stop_at,
                             batch=1) == whole, stop_at


def test_a_dive_expands_the_best_candidate_of_each_layer_first():
    """Without warm start or repair: layer 0's children (of the root), then the children at
    layer 1 of the best of them, at layer 2 of the best of those, and so on to the last
    layer; only then the layer-by-layer rounds."""
    space = toy(seed=4, layers=5, options=4)
    target = toy_target(space, 0.6)
    searcher = make_layernas(space, target, dives=1, warm_start=0, repair=False, fill="in_target",
                             when_exhausted="stop")
    proposed, _ = trace_of(searcher, space, batch=1)
    parent, i = tuple(Completion(space, target).default_arch("in_target")), 0
    for layer in range(space.num_layers):
        children = [parent[:layer] + (o,) + parent[layer + 1:] for o in range(space.num_options[layer])]
        children = [c for c in children if target.reachable(space, c[: layer + 1])]
        fresh = [c for c in children if c not in proposed[:i]]
        assert proposed[i: i + len(fresh)] == fresh, layer
        i += len(fresh)
        parent = max(children, key=lambda a: (space.reward(a), -space.cost(a)["cost"]))
    plain, _ = trace_of(make_layernas(space, target, dives=0, warm_start=0, repair=False, fill="in_target",
                                      when_exhausted="stop"), space, batch=1)
    assert proposed != plain and proposed[:space.num_options[0]] == plain[:space.num_options[0]]


def test_with_one_bucket_a_dive_is_the_layerwise_search_itself():
    """With one bucket per layer the layerwise search already expands one candidate per layer,
    the best: one dive changes nothing (the MobileNet benchmark's H=1 searches)."""
    for seed in range(4):
        space = toy(seed=seed, layers=6, options=3)
        target = toy_target(space, 0.5)
        runs = [trace_of(make_layernas(space, target, num_buckets=1, dives=d), space, seed=seed)[0] for d in (0, 1)]
        assert runs[0] == runs[1]


@pytest.mark.parametrize("bad, message", [
    (dict(dives=-1), "dives must be an integer >= 0, got -1"),
    (dict(dives=True), "dives must be an integer >= 0, got True"),
    (dict(dives="1"), "dives must be an integer >= 0, got '1'"),
])
def test_bad_dives_name_the_value(bad, message):
    with pytest.raises(ValueError, match=message):
        make_layernas(toy(), Target("cost", max=20), **bad)


def test_a_run_recorded_before_dives_resumes_without_them_and_a_dive_is_refused(tmp_path, monkeypatch):
    """A run folder written before ``dives`` existed records a config without it; resuming
    reads it as ``dives=0``: the new default (a dive) is refused, naming the option to pass,
    and passing it continues the run exactly."""
    import layernas.api

    space = toy(seed=6, layers=5, options=4)
    target = toy_target(space)
    ev = AdditiveEvaluator(space)
    whole = layernas.search(space, ev, budget=30, target=target, searcher_options={"dives": 0})
    out = tmp_path / "run"
    real = layernas.api.make_searcher

    def before_dives(*a, **k):
        searcher = real(*a, **k)
        return searcher._replace(config={n: v for n, v in searcher.config.items() if n != "dives"})

    monkeypatch.setattr(layernas.api, "make_searcher", before_dives)
    layernas.search(space, ev, budget=12, target=target, searcher_options={"dives": 0}, out_dir=out)
    monkeypatch.setattr(layernas.api, "make_searcher", real)
    assert PRESETS["efficient"]["dives"] == 1
    with pytest.raises(layernas.RunError, match="dives: 0 -> 1.*pass the searcher option.*dives=0"):
        layernas.search(space, ev, budget=30, target=target, out_dir=out, resume=True)
    resumed = layernas.search(space, ev, budget=30, target=target, out_dir=out, resume=True,
                              searcher_options={"dives": 0})
    assert list(resumed.history.arch_str) == list(whole.history.arch_str)


# --- NATS-Bench tss (needs the shared table) ------------------------------------------------

@pytest.fixture(scope="module")
def nats():
    from tests.conftest import shared_path
    from layernas import comparison as nc

    return nc, shared_path("data", "nats_tss", "nats_tss_200ep.csv")


def test_paper_preset_reproduces_the_committed_nats_comparison(nats):
    """The committed results/nats/points.parquet was made before the options existed; the
    paper preset must give the same best-so-far test accuracy and evaluation counts at every
    budget point, for a few seeds of every panel."""
    nc, table = nats
    committed = REPO / "results" / "nats" / "points.parquet"
    if not committed.exists():
        pytest.skip(f"needs the committed {committed}")
    points = pd.read_parquet(committed)
    points = points[(points.algorithm == "layernas") & (points.seed < 2)]
    for dataset in nc.DATASETS:
        space, evaluator = nc.context(table, dataset)
        for fraction in nc.FRACTIONS:
            setting = nc.Setting(dataset, fraction, nc.TSS_TIME_BUDGETS[dataset], 200)
            for seed in (0, 1):
                trace = nc.run_search("layernas", space, evaluator, nc.flops_target(space, fraction), seed,
                                      setting.max_seconds, 200, {"preset": "paper"})
                got = pd.DataFrame(nc.budget_points(trace, setting))
                want = points[(points.dataset == dataset) & (points.fraction == fraction)
                              & (points.seed == seed)]
                assert len(got) == len(want) > 0
                np.testing.assert_array_equal(got.evaluations.to_numpy(), want.evaluations.to_numpy())
                np.testing.assert_array_equal(got.best_test.to_numpy(), want.best_test.to_numpy())


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_nats_options_spend_as_documented(nats, fraction):
    """On NATS cifar10: the paper's fill evaluates over-budget models; in_target's first model
    is feasible; repair never evaluates an over-budget model; every answer is feasible."""
    nc, table = nats
    space, evaluator = nc.context(table, "cifar10")
    target = nc.flops_target(space, fraction)
    runs = {}
    for name, options in {"paper": {"preset": "paper"},
                          "in_target": {"preset": "paper", "fill": "in_target"},
                          "repair": {"preset": "paper", "repair": True},
                          "efficient": {"preset": "efficient"}}.items():
        trace = nc.run_search("layernas", space, evaluator, target, 0, 20000.0, 1, options)
        runs[name] = trace
        answered = np.isfinite(trace["best_test"])
        assert answered.any()
        rows = trace["rows"][trace["feasible"]]
        assert trace["best_test"][-1] in evaluator.arrays.test_mean[rows]
    assert (~runs["paper"]["feasible"]).sum() > 50
    assert not runs["paper"]["feasible"][0] and runs["in_target"]["feasible"][0]
    assert runs["repair"]["feasible"].all()


# --- the ablation benchmark's measures ----------------------------------------------------

def ablation_module():
    return load_benchmark("nats_ablation")


def test_area_is_the_mean_of_the_step_curve_with_zero_before_the_first_answer():
    ab = ablation_module()
    # answers 50 from t=20 and 80 from t=60 over a budget of 100; evaluations after it do not count
    cum = np.array([10.0, 20.0, 60.0, 130.0])
    best = np.array([np.nan, 50.0, 80.0, 99.0])
    assert ab.area(cum, best, 100.0) == pytest.approx((50 * 40 + 80 * 40) / 100)
    np.testing.assert_array_equal(ab.at_fractions(cum, best, 100.0)[[0, 8, 24, 40]], [np.nan, 50, 80, 80])


def test_ahead_from_needs_every_run_answered_and_a_higher_mean_to_the_end():
    ab = ablation_module()
    n = len(ab.GRID)
    ref = np.full((2, n), 50.0)
    mine = np.full((2, n), 60.0)
    assert ab.ahead_from(mine, ref) == 0.0
    mine[1, :10] = np.nan            # one run without an answer for the first 10 grid points
    assert ab.ahead_from(mine, ref) == pytest.approx(ab.GRID[10])
    mine[:, -1] = 40.0               # behind at the end: never ahead for good
    assert np.isnan(ab.ahead_from(mine, ref))


def test_every_ablation_variant_names_every_preset_option():
    """A variant must not inherit an option from the library's default preset: that would
    change what it runs (and its journalled cells would no longer match) when the default
    changes."""
    ab = ablation_module()
    for name, options in ab.variants().items():
        assert set(PRESETS["efficient"]) <= set(options), name
        assert ab.variant_name(options) == name
        # the same searcher whichever preset it is built on
        space = toy()
        target = toy_target(space)
        a, _ = trace_of(make_layernas(space, target, preset="paper", **options), space, limit=60)
        b, _ = trace_of(make_layernas(space, target, preset="efficient", **options), space, limit=60)
        assert a == b, name
    assert ab.variant_name(PRESETS["paper"]) == "space/model/reward"


def test_ablation_smoke_run_writes_every_output(nats, tmp_path):
    ab = ablation_module()
    _, table = nats
    assert ab.main(["--table", str(table), "--seeds", "1", "--processes", "1", "--out", str(tmp_path),
                    "--journal", str(tmp_path / "cells.jsonl")]) == 0
    frame = pd.read_csv(tmp_path / "ablation.csv")
    assert {"option", "dataset", "flops_fraction", "first_feasible_eval", "infeasible_fraction", "auc_test",
            "final_test_mean", "final_test_std", "auc_valid"} <= set(frame.columns)
    assert len(frame) == 6 * (len(ab.variants()) + 1)
    paper = frame[frame.option == "space/model/reward"]
    assert (paper.infeasible_in_budget > 0).all() and (frame[frame.option == "rea"].infeasible_in_budget == 0).all()
    for name in ("ablation.md", "ablation_curves.png", "ablation_runs.csv", "ablation_provenance.json"):
        assert (tmp_path / name).exists()
