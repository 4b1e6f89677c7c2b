"""The fast paths of table searches give exactly the numbers of the plain ones.

Draws (the baselines' random numbers) against numpy's Generator, the table lookup against
the documented seed_index rule, and the comparison against the committed results/nats/
runs for the first seeds (rows of runs.csv do not depend on the other seeds).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layernas.evaluator import EvalResult, Trial, trial_seed
from layernas.searchers import base

REPO = Path(__file__).resolve().parents[1]


def _same_state(a: np.random.Generator, b: np.random.Generator) -> bool:
    x, y = a.bit_generator.state, b.bit_generator.state
    return x["state"] == y["state"] and x["has_uint32"] == y["has_uint32"] and (
        not x["has_uint32"] or x["uinteger"] == y["uinteger"])


def test_draws_are_the_numbers_of_rng_from():
    r = random.Random(0)
    for case in range(400):
        state = {"seed": r.randrange(2**40), "draws": r.randrange(400)}
        gen, after_gen = base.rng_from(state)
        draws, after = base.draws_from(state)
        assert after == after_gen
        for _ in range(r.randrange(1, 120)):   # past the first read of raw words, mixed kinds
            kind = r.choice("iiirbeu")
            if kind == "r":
                a, b = float(gen.random()), draws.random()
            elif kind == "e":   # one integer per bound, in one call
                bounds = [r.choice([1, 2, 5, 6, 7, 2**31 + 3, 2**32]) for _ in range(r.randrange(0, 9))]
                a, b = [int(gen.integers(n)) for n in bounds], draws.integers_each(bounds)
            elif kind == "u":
                k = r.randrange(0, 9)
                a, b = [float(gen.random()) for _ in range(k)], draws.uniforms(k)
            else:
                n = r.choice([1, 2, 3, 5, 6, 10, 1000, 2**32 - 1, 2**32]) if kind == "i" else r.randrange(1, 2**32)
                a, b = int(gen.integers(n)), draws.integers(n)
            assert (a, type(a)) == (b, type(b))
        if case % 3 == 0:   # a handed-over Generator continues the stream
            handed = draws.generator()
            assert _same_state(handed, gen)
            assert int(gen.integers(7)) == draws.integers(7)
            assert gen.random(4).tolist() == handed.random(4).tolist()


def test_draws_reject_what_they_do_not_cover():
    draws, _ = base.draws_from({"seed": 1, "draws": 0})
    with pytest.raises(ValueError):
        draws.integers(0)
    with pytest.raises(ValueError):
        draws.integers(2**32 + 1)


def test_sample_feasible_draws_what_the_generator_draws():
    from tests.toy_spaces import AdditiveSpace

    space = AdditiveSpace([[1, 2, 3, 4], [0, 5], [2, 2, 7], [1, 1, 1, 1, 1]],
                          [[0, 1, 2, 3], [1, 0], [0, 1, 2], [0, 0, 0, 0, 0]])
    archs = list(space.all_archs())
    feasible = lambda a: sum(a) % 3 == 0   # noqa: E731
    for seed in range(60):
        state = {"seed": seed, "draws": seed % 7}
        exclude = set(archs[seed % 5::9])
        gen, _ = base.rng_from(state)
        draws, _ = base.draws_from(state)
        a = base.sample_feasible(gen, space, feasible, exclude=exclude, max_tries=50)
        b = base.sample_feasible(draws, space, feasible, exclude=exclude, max_tries=50)
        assert a == b


def test_reinforce_bisection_is_the_cdf_count():
    from bisect import bisect_left

    rng = np.random.default_rng(0)
    for _ in range(2000):
        logits = rng.normal(scale=rng.choice([0.01, 1, 30]), size=(6, 5))
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(z / z.sum(axis=1, keepdims=True), axis=1)
        cdf[:, -1] = 1.0
        u = rng.random(6)
        want = tuple(int(i) for i in (cdf < u[:, None]).sum(axis=1))
        assert tuple(bisect_left(row, x) for row, x in zip(cdf.tolist(), u.tolist())) == want


@pytest.fixture(scope="module")
def tss(request):
    from tests.conftest import shared_path
    from layernas import comparison

    path = shared_path("data", "nats_tss", "nats_tss_200ep.csv")
    return path, comparison.context(path, "cifar10")


def test_table_lookup_is_the_documented_rule(tss):
    from layernas.table_evaluator import seed_index

    _, (space, ev) = tss
    rng = np.random.default_rng(3)
    for i in range(300):
        arch = space.random_arch(rng)
        trial = Trial(i, arch, trial_seed(i % 7, i))
        got = ev.evaluate(trial)
        row = ev.row(arch)
        n = int(ev.arrays.num_seeds[row])
        k = seed_index(trial.seed, n)
        info = {"table_seed": k, "index": int(ev.arrays.index[row])}
        if ev.arrays.seed_ids[row][k] >= 0:
            info["seed"] = int(ev.arrays.seed_ids[row][k])
        test = float(ev.arrays.test_mean[row])
        want = EvalResult(i, tuple(arch), float(ev.arrays.valid_per_seed[row, k]), float(ev.cost_seconds[row]),
                          test if np.isfinite(test) else None, dict(ev._costs[row]), "ok", "", info)
        assert got == want and type(got) is EvalResult
        assert got.info is not ev.evaluate(trial).info and got.costs is not ev.evaluate(trial).costs


def test_comparison_matches_the_committed_runs_for_the_first_seeds(tss):
    """results/nats/runs.csv's rows for seeds 0 and 1, recomputed (all searchers, datasets
    and budgets): every draw of every searcher and every lookup must be unchanged."""
    from layernas import comparison

    path, _ = tss
    seeds = 2
    _, runs, _ = comparison.run_comparison(path, seeds, processes=1, options={"layernas": {"preset": "paper"}})
    committed = pd.read_csv(REPO / "results" / "nats" / "runs.csv")
    keys = ["algorithm", "dataset", "fraction", "seed"]
    want = committed[committed.seed < seeds].sort_values(keys).reset_index(drop=True)
    got = pd.read_csv(io.StringIO(runs.to_csv(index=False))).sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_nats_cost_table_is_the_formula():
    """NatsTss.cost answers valid tuples from a table built by vectorised sums; every entry
    must be the formula's numbers (same floats, same keys in the same order)."""
    import itertools

    from layernas.search_spaces.nats_tss import NatsTss

    for dataset in ("cifar10", "ImageNet16-120"):
        space = NatsTss(dataset)
        for arch in itertools.product(range(5), repeat=6):
            got, want = space.cost(arch), space._cost(arch)
            assert list(got.items()) == list(want.items()) and got is not space.cost(arch)
        assert space.cost([1, 2, 3, 4, 0, 1]) == space._cost((1, 2, 3, 4, 0, 1))   # a list: the formula
        with pytest.raises(Exception, match="option 5"):
            space.cost((5, 0, 0, 0, 0, 0))


def test_serial_table_runs_take_the_fast_path_and_match_a_generic_executor(tss, monkeypatch):
    """A SerialExecutor run in memory is driven without the executor's queue; an executor
    of another type (here: a thin wrapper) goes through submit/wait. Both must give the same
    trials, results, history rows and final state, and the comparison's columns must be
    the rows' numbers."""
    from layernas import run as run_module
    from layernas.executors import SerialExecutor
    from layernas.run import Budget, run_loop
    from layernas.searchers import make_searcher
    from layernas.comparison import flops_target
    from layernas.results import best_so_far

    class Wrapped:   # the same evaluation, but not a SerialExecutor: the generic path
        def __init__(self, evaluator):
            self.inner = SerialExecutor(evaluator)
            self.max_in_flight = 1

        def submit(self, trial):
            self.inner.submit(trial)

        def wait(self, timeout=None):
            return self.inner.wait(timeout)

        def close(self):
            pass

    _, (space, ev) = tss
    target = flops_target(space, 0.25)
    used = []
    fast = run_module._drive_serial
    monkeypatch.setattr(run_module, "_drive_serial", lambda *a: (used.append(1), fast(*a)))
    for algorithm in ("layernas", "random", "rea", "reinforce"):
        budget = Budget(evaluations=60, seconds=4000.0, until="last")
        records = []
        for executor in (SerialExecutor(ev), Wrapped(ev)):
            searcher = make_searcher(algorithm, space, target)
            records.append(run_loop(space, searcher, executor, budget, target, seed=5))
        assert len(used) == 1
        used.clear()
        a, b = records
        assert a.history == b.history and a.state == b.state and len(a.history) >= 60
        assert a.committed.results == b.committed.results
        assert a.committed.cum_seconds == [h["cum_seconds"] for h in a.history]
        assert a.committed.feasible == [h["feasible"] for h in a.history]
        assert a.committed.best == best_so_far(a.history)[-1]
        assert all(h["feasible"] == target.feasible(h["costs"]) for h in a.history if h["status"] == "ok")
