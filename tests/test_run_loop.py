"""The run loop: budgets, atomic checkpoints, resume after SIGKILL, order independence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import layernas
from layernas.evaluator import EvalResult
from layernas.run import Budget, RunError, finished_results
from layernas.target import Target
from toy_spaces import AdditiveEvaluator, AdditiveSpace

TESTS = Path(__file__).resolve().parent
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np, layernas
from layernas.target import Target
from toy_spaces import AdditiveSpace, AdditiveEvaluator
space = AdditiveSpace.random(np.random.default_rng(11), 5, 4, max_cost=9)
result = layernas.search(space, AdditiveEvaluator(space, sleep={sleep}, log={log!r}), budget=60,
                         target=Target("cost", max=20), seed=3, out_dir={out!r}, resume=True,
                         max_in_flight={k}, searcher_options={{"preset": "paper"}})
print(result.best["arch_str"])
"""


def toy_space():
    return AdditiveSpace.random(np.random.default_rng(11), 5, 4, max_cost=9)


def reference(k, searcher_options=None):
    space = toy_space()
    return layernas.search(space, AdditiveEvaluator(space), budget=60, target=Target("cost", max=20),
                           seed=3, max_in_flight=k, searcher_options=searcher_options)


def committed_ids(out: Path) -> set[int]:
    return {r.trial_id for r in finished_results(out)}


@pytest.mark.parametrize("k", [1, 3])
def test_sigkill_and_resume_gives_the_uninterrupted_answer(tmp_path, k):
    out = tmp_path / "run"
    # LayerNAS's paper preset runs all 60 evaluations here (the default's layerwise search ends after 24): enough for 3 kills
    ref = reference(k, {"preset": "paper"})
    kills = 0
    for session in range(12):
        log = tmp_path / f"evals{session}.log"
        before = committed_ids(out)
        script = SCRIPT.format(tests=str(TESTS), sleep=0.03, log=str(log), out=str(out), k=k)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if kills < 3:
            # let it get some way in, then kill it without warning
            deadline = time.time() + 30
            while time.time() < deadline and proc.poll() is None:
                if log.exists() and len(log.read_text().split()) >= 5 + 3 * kills:
                    break
                time.sleep(0.01)
            time.sleep(np.random.default_rng(session).uniform(0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                redone = before & set(map(int, log.read_text().split())) if log.exists() else set()
                assert not redone, f"finished trials {sorted(redone)} were evaluated again"
                continue
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        redone = before & set(map(int, log.read_text().split())) if log.exists() else set()
        assert not redone, f"finished trials {sorted(redone)} were evaluated again"
        break
    assert kills == 3
    assert stdout.strip() == ref.best["arch_str"]
    result = json.loads((out / "result.json").read_text())
    assert result["best"]["arch_str"] == ref.best["arch_str"]
    import pandas as pd
    history = pd.read_csv(out / "history.csv")
    assert list(history.arch_str) == list(ref.history.arch_str)
    np.testing.assert_allclose(history.reward, ref.history.reward)


class ShuffledExecutor:
    """Finishes trials in a random order, several at a time, like a parallel backend."""

    def __init__(self, evaluator, max_in_flight, seed):
        self.evaluator, self.max_in_flight = evaluator, max_in_flight
        self.rng = np.random.default_rng(seed)
        self.pending = []

    def submit(self, trial):
        self.pending.append(trial)

    def wait(self, timeout=None):
        if not self.pending:
            return []
        self.rng.shuffle(self.pending)
        n = int(self.rng.integers(1, len(self.pending) + 1))
        done, self.pending = self.pending[:n], self.pending[n:]
        return [self.evaluator.evaluate(t) for t in done]

    def close(self):
        pass


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_results_do_not_depend_on_arrival_order(seed):
    space = toy_space()
    ref = reference(4)
    shuffled = layernas.search(space, ShuffledExecutor(AdditiveEvaluator(space), 4, seed), budget=60,
                               target=Target("cost", max=20), seed=3)
    assert list(shuffled.history.arch_str) == list(ref.history.arch_str)
    assert shuffled.state == ref.state


def test_seconds_budget_and_same_seed_determinism():
    space = toy_space()
    run = lambda: layernas.search(space, AdditiveEvaluator(space), budget=Budget(seconds=25),
                                  target=Target("cost", max=20), seed=5,
                                  searcher_options={"preset": "paper"})  # the default's layerwise search ends after 24
    a, b = run(), run()
    assert a.evaluations == 25 and a.simulated_seconds == 25.0
    assert a.history.equals(b.history)
    assert a.history.cum_seconds.is_monotonic_increasing


def test_outputs_history_result_and_frontier(tmp_path):
    space = toy_space()
    result = layernas.search(space, AdditiveEvaluator(space), budget=40, target=Target("cost", max=20),
                             out_dir=tmp_path / "o")
    for name in ("checkpoint.json", "history.csv", "frontier.csv", "result.json"):
        assert (tmp_path / "o" / name).exists()
    saved = json.loads((tmp_path / "o" / "result.json").read_text())
    assert saved["best"]["arch_str"] == result.best["arch_str"]
    assert saved["best"]["reward"] == pytest.approx(result.history.reward[result.history.feasible].max())
    hist = result.history
    assert (hist.best_reward.dropna().diff().dropna() >= 0).all()
    assert hist.best_reward.iloc[-1] == pytest.approx(result.best["reward"])
    frontier = result.frontier
    assert frontier.pareto.iloc[0]
    assert frontier.reward.max() == pytest.approx(hist.reward.max())


def test_bad_budgets_and_checkpoints(tmp_path):
    space = toy_space()
    ev = AdditiveEvaluator(space)
    t = Target("cost", max=20)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(RunError, match="budget"):
            layernas.search(space, ev, budget=bad, target=t)
    with pytest.raises(RunError, match="seconds"):
        Budget(seconds=-1)
    out = tmp_path / "run"
    layernas.search(space, ev, budget=5, target=t, out_dir=out)
    with pytest.raises(RunError, match="already holds a search"):
        layernas.search(space, ev, budget=5, target=t, out_dir=out)
    with pytest.raises(RunError, match="settings differ.*seed"):
        layernas.search(space, ev, budget=5, target=t, out_dir=out, resume=True, seed=9)
    # extending the budget of a finished run is allowed and continues it
    more = layernas.search(space, ev, budget=9, target=t, out_dir=out, resume=True)
    assert more.evaluations == 9
    (out / "checkpoint.json").write_text("{not json")
    with pytest.raises(RunError, match="cannot read checkpoint"):
        layernas.search(space, ev, budget=5, target=t, out_dir=out, resume=True)


def test_a_changed_default_is_refused_on_resume_and_the_old_value_continues_the_run(tmp_path, monkeypatch):
    import importlib

    layernas_mod = importlib.import_module("layernas.searchers.layernas")  # the module, not its factory
    space, t = toy_space(), Target("cost", max=20)
    ev = AdditiveEvaluator(space)
    whole = layernas.search(space, ev, budget=9, target=t, seed=3)
    out = tmp_path / "run"
    layernas.search(space, ev, budget=5, target=t, seed=3, out_dir=out)
    started = layernas_mod.PRESETS["efficient"]["when_exhausted"]
    changed = "stop" if started != "stop" else "mutate"
    # a later version changes the default preset: the resumed search would silently differ
    monkeypatch.setitem(layernas_mod.PRESETS, "efficient", {**layernas_mod.PRESETS["efficient"],
                                                             "when_exhausted": changed})
    with pytest.raises(RunError, match=f"when_exhausted: '{started}' -> '{changed}'.*"
                                       f"pass the searcher option.*when_exhausted='{started}'"):
        layernas.search(space, ev, budget=9, target=t, seed=3, out_dir=out, resume=True)
    resumed = layernas.search(space, ev, budget=9, target=t, seed=3, out_dir=out, resume=True,
                              searcher_options={"when_exhausted": started})
    assert list(resumed.history.arch_str) == list(whole.history.arch_str)


def test_a_run_recorded_without_a_searcher_config_still_resumes(tmp_path, monkeypatch):
    import layernas.api

    space, t = toy_space(), Target("cost", max=20)
    ev = AdditiveEvaluator(space)
    out = tmp_path / "run"
    real = layernas.api.make_searcher
    monkeypatch.setattr(layernas.api, "make_searcher", lambda *a, **k: real(*a, **k)._replace(config={}))
    layernas.search(space, ev, budget=4, target=t, out_dir=out)  # as an older version wrote it
    monkeypatch.setattr(layernas.api, "make_searcher", real)
    assert layernas.search(space, ev, budget=7, target=t, out_dir=out, resume=True).evaluations == 7
    with pytest.raises(RunError, match="settings differ.*seed"):
        layernas.search(space, ev, budget=8, target=t, out_dir=out, resume=True, seed=5)
