"""The run folder: journal + snapshots resume exactly, the lock, bad checkpoints, summaries."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import layernas
from layernas.evaluator import EvalResult
from layernas.run import CHECKPOINT_NAME, JOURNAL_NAME, Budget, RunError, finished_results
from layernas.run_dir import RunLock
from layernas.target import Target
from toy_spaces import AdditiveEvaluator, AdditiveSpace

TARGET = Target("cost", max=20)


def space():
    return AdditiveSpace.random(np.random.default_rng(11), 5, 4, max_cost=9)


def run(out=None, budget=60, searcher="rea", resume=False, k=1, evaluator=None, seed=3):
    s = space()
    return layernas.search(s, evaluator or AdditiveEvaluator(s), budget, TARGET, seed=seed, searcher=searcher,
                           out_dir=out, resume=resume, max_in_flight=k)


@pytest.mark.parametrize("searcher", ["layernas", "random", "rea", "reinforce"])
@pytest.mark.parametrize("k", [1, 3])
def test_resume_from_any_journal_prefix_equals_the_uninterrupted_run(tmp_path, monkeypatch, searcher, k):
    """Cut the journal after every line (as a kill would), with and without the snapshot
    of a later or earlier point: every resume gives the uninterrupted history."""
    import layernas.run as run_module

    monkeypatch.setattr(run_module, "SNAPSHOT_EVERY", 7)   # several snapshots in one run
    snapshots = []
    write = run_module.write_json_atomic

    def keep(path, obj, **kw):
        snapshots.append(json.loads(json.dumps(obj)))
        write(path, obj, **kw)

    monkeypatch.setattr(run_module, "write_json_atomic", keep)
    ref = run(budget=40, searcher=searcher, k=k)
    full = tmp_path / "full"
    run(full, budget=40, searcher=searcher, k=k)
    full_snapshots = list(snapshots)   # the full run's (the resumes below add their own)
    assert len(full_snapshots) >= 4
    lines = (full / JOURNAL_NAME).read_bytes().splitlines(keepends=True)
    for cut in range(1, len(lines), max(1, len(lines) // 12)):
        out = tmp_path / f"cut{cut}"
        out.mkdir()
        data = b"".join(lines[:cut])
        (out / JOURNAL_NAME).write_bytes(data)
        covered = [snap for snap in full_snapshots if snap["journal_bytes"] <= len(data)]
        if covered and cut % 2:   # resume from the latest snapshot + the journal after it
            (out / CHECKPOINT_NAME).write_text(json.dumps(covered[-1]))
        resumed = run(out, budget=40, searcher=searcher, k=k, resume=True)
        assert list(resumed.history.arch_str) == list(ref.history.arch_str), cut
        np.testing.assert_array_equal(resumed.history.reward, ref.history.reward)
        assert json.loads(json.dumps(resumed.state)) == json.loads(json.dumps(ref.state))


def test_snapshot_plus_replay_and_budget_extension(tmp_path, monkeypatch):
    import layernas.run as run_module

    monkeypatch.setattr(run_module, "SNAPSHOT_EVERY", 5)
    out = tmp_path / "run"
    run(out, budget=20)
    snapshot = json.loads((out / CHECKPOINT_NAME).read_text())
    assert snapshot["committed"] == 20 and snapshot["journal_bytes"] == (out / JOURNAL_NAME).stat().st_size
    more = run(out, budget=35, resume=True)
    assert more.evaluations == 35
    assert list(more.history.arch_str[:20]) == list(run(budget=20).history.arch_str)
    assert sorted(r.trial_id for r in finished_results(out)) == list(range(35))


def test_journal_append_cost_does_not_grow_with_the_run(tmp_path):
    out = tmp_path / "run"
    run(out, budget=300, searcher="reinforce")
    lines = (out / JOURNAL_NAME).read_bytes().splitlines()
    sizes = [len(line) for line in lines[2:]]
    assert max(sizes[-50:]) <= 1.2 * max(sizes[:50])   # one result per line, whatever came before
    assert len(json.loads((out / CHECKPOINT_NAME).read_text())["state"]["logits"]) == 5


@pytest.mark.parametrize("bad", [
    "{not json", "[]", '{"version": 2}', '{"version": 2, "journal_bytes": 10**9}',
    '{"version": 2, "journal_bytes": 5, "state": 3}',
    '{"version": 2, "journal_bytes": 10, "state": {}, "issued": "x", "committed": 0, "in_flight": 1,'
    ' "finished": [], "budget": {}}',
])
def test_malformed_checkpoints_are_one_line_run_errors(tmp_path, bad):
    out = tmp_path / "run"
    run(out, budget=10)
    (out / CHECKPOINT_NAME).write_text(bad)
    with pytest.raises(RunError, match="cannot read checkpoint") as e:
        run(out, budget=10, resume=True)
    assert "\n" not in str(e.value)


def test_a_checkpoint_of_the_old_format_is_refused_with_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT_NAME).write_text(json.dumps({"version": 1, "history": []}))
    with pytest.raises(RunError, match="not a version-2 layernas checkpoint"):
        run(out, budget=5, resume=True)


def test_a_journal_that_was_edited_is_refused(tmp_path):
    out = tmp_path / "run"
    run(out, budget=10)
    lines = (out / JOURNAL_NAME).read_text().splitlines(keepends=True)
    result = json.loads(lines[3])
    result["result"]["arch"] = [0, 0, 0, 0, 0] if result["result"]["arch"] != [0, 0, 0, 0, 0] else [1, 1, 1, 1, 1]
    lines[3] = json.dumps(result) + "\n"
    (out / JOURNAL_NAME).write_text("".join(lines))
    (out / CHECKPOINT_NAME).unlink()
    with pytest.raises(RunError, match="does not match"):
        run(out, budget=10, resume=True)


HOLD = """
import sys, time
from layernas.run_dir import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_the_lock_names_the_holder_and_is_reentrant(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=rf"^{out} is in use by PID {holder.pid}$"):
            run(out, budget=5)
        with pytest.raises(RunError, match="in use by PID"):
            run(out, budget=5, resume=True)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    with RunLock(out), RunLock(out):   # free again after the holder died; re-entrant here
        result = run(out, budget=5)
    assert result.evaluations == 5
    with pytest.raises(RunError, match="not a directory"):
        run(tmp_path / "run" / "history.csv", budget=5)


class Broken:
    def evaluate(self, trial):
        raise ValueError(f"cannot decode image {trial.trial_id}.png")


class Failing:
    def evaluate(self, trial):
        return EvalResult.failed(trial, "loss is NaN at step 3")


@pytest.mark.parametrize("evaluator, error", [(Broken(), "ValueError: cannot decode image 0.png"),
                                               (Failing(), "loss is NaN at step 3")])
def test_summary_says_when_every_trial_failed_and_why(evaluator, error):
    result = run(budget=6, searcher="random", evaluator=evaluator)
    summary = result.summary()
    assert "every trial failed (6 of 6)" in summary and error in summary
    assert "satisfies the target" not in summary


def test_summary_says_when_the_searcher_stopped_early():
    result = run(budget=500, searcher="layernas")
    assert result.evaluations < 500 and result.stopped_early
    assert f"stopped after {result.evaluations} of 500 evaluations" in result.summary()
    full = run(budget=10, searcher="layernas")
    assert not full.stopped_early and "stopped after" not in full.summary()


def test_budget_until_last_goes_on_to_both_limits():
    s = space()
    both = layernas.search(s, AdditiveEvaluator(s), Budget(evaluations=30, seconds=10.0, until="last"), TARGET,
                           searcher="rea")
    assert both.evaluations == 30
    both = layernas.search(s, AdditiveEvaluator(s), Budget(evaluations=5, seconds=10.0, until="last"), TARGET,
                           searcher="rea")
    assert both.simulated_seconds >= 10.0 and both.evaluations >= 5
    first = layernas.search(s, AdditiveEvaluator(s), Budget(evaluations=30, seconds=10.0), TARGET, searcher="rea")
    assert first.evaluations == 10
    with pytest.raises(RunError, match="until"):
        Budget(evaluations=3, until="both")


def test_in_memory_runs_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(budget=30)
    assert list(Path(tmp_path).iterdir()) == []


def test_a_kill_between_the_snapshot_and_its_journal_lines_resumes(tmp_path, monkeypatch):
    """A snapshot is written before its step's journal lines; a kill between the two leaves
    a snapshot ahead of the journal, which the resume completes the journal from."""
    import layernas.run as run_module

    snapshots = []
    write = run_module.write_json_atomic

    def keep(path, obj, **kw):
        snapshots.append(json.loads(json.dumps(obj)))
        write(path, obj, **kw)

    monkeypatch.setattr(run_module, "write_json_atomic", keep)
    monkeypatch.setattr(run_module, "SNAPSHOT_OVERHEAD", 0.0)   # snapshot every step
    full = tmp_path / "full"
    ref = run(full, budget=30, searcher="reinforce", k=3)
    data = (full / JOURNAL_NAME).read_bytes()
    ahead = [snap for snap in snapshots if snap["tail"]]
    assert len(ahead) >= 5
    for i, snap in enumerate(ahead[::3]):
        out = tmp_path / f"ahead{i}"
        out.mkdir()
        (out / JOURNAL_NAME).write_bytes(data[:snap["journal_bytes"]] + b'{"result": {"tri')   # torn too
        (out / CHECKPOINT_NAME).write_text(json.dumps(snap))
        assert len(finished_results(out)) == len(snap["history"]) + len(snap["finished"])
        resumed = run(out, budget=30, searcher="reinforce", k=3, resume=True)
        assert list(resumed.history.arch_str) == list(ref.history.arch_str)
        assert (out / JOURNAL_NAME).read_bytes().startswith(data[:snap["journal_bytes"]])
