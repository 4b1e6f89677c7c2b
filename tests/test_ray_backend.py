"""The Ray backend on a real local Ray cluster (``ray start --head`` on loopback).

Covers dispatch, results identical to a local run whatever order they arrive in, a worker
process killed by its pid (retried, then failed with the reason, and the search goes on),
and a killed driver resumed with ``resume=True`` (only unfinished trials re-dispatched, the
final answer equal to the uninterrupted run). One cluster serves the whole module.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e .[ray])")

import layernas  # noqa: E402
from layernas.evaluator import Trial  # noqa: E402
from layernas.executors import RayBackendError, RayExecutor, SerialExecutor, make_ray_executor  # noqa: E402
from layernas.run import finished_results  # noqa: E402
from layernas.searchers.base import Target  # noqa: E402
from toy_spaces import AdditiveEvaluator, AdditiveSpace  # noqa: E402

TESTS = Path(__file__).resolve().parent
TARGET = Target("cost", max=20)
# LayerNAS's paper preset runs all 40 evaluations on the toy space (the default's layerwise search ends after 24)
PAPER = {"preset": "paper"}


def toy_space():
    return AdditiveSpace.random(np.random.default_rng(11), 5, 4, max_cost=9)


# -- evaluators that run inside Ray workers (importable there: the cluster has tests/ on
# -- its PYTHONPATH) ----------------------------------------------------------------------

class JitterEvaluator(AdditiveEvaluator):
    """AdditiveEvaluator that first sleeps a random time, so results arrive out of order."""

    def __init__(self, space, max_sleep=0.05, log=None):
        super().__init__(space, log=log)
        self.max_sleep = max_sleep

    def evaluate(self, trial):
        time.sleep(random.uniform(0, self.max_sleep))
        return super().evaluate(trial)


class PidEvaluator(AdditiveEvaluator):
    """Writes ``<pid_dir>/<trial_id>.<pid>`` on start; trials in ``slow`` sleep ``sleep`` s."""

    def __init__(self, space, pid_dir, slow=(), sleep=1.0):
        super().__init__(space)
        self.pid_dir, self.slow, self.slow_sleep = str(pid_dir), set(slow), sleep

    def evaluate(self, trial):
        Path(self.pid_dir, f"{trial.trial_id}.{os.getpid()}").touch()
        if trial.trial_id in self.slow:
            time.sleep(self.slow_sleep)
        return super().evaluate(trial)


class FailingEvaluator(AdditiveEvaluator):
    """Trial ``victim`` raises (mode "raise") or kills its own process (mode "die")."""

    def __init__(self, space, victim, mode):
        super().__init__(space)
        self.victim, self.mode = victim, mode

    def evaluate(self, trial):
        if trial.trial_id == self.victim:
            if self.mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError(f"trial {trial.trial_id} is broken")
        return super().evaluate(trial)


def broken_factory():
    raise RuntimeError("no accelerator here")


# -- the cluster ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray head on loopback in its own process group; this process joins it."""
    temp = tempfile.mkdtemp(prefix="lnray")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    # drivers (this process and the driver subprocesses) must match the head's auth mode
    saved_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = free_port()
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
           f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
           "--include-dashboard=false", f"--temp-dir={temp}",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]
    log = open(Path(temp) / "head.log", "w")
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                ray.init(address=address, log_to_driver=False)
                break
            except Exception:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError(f"Ray head did not start: {(Path(temp) / 'head.log').read_text()}")
                time.sleep(0.5)
        yield address
    finally:
        ray.shutdown()
        if saved_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_auth
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything left in the group this test started
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp, ignore_errors=True)  # the head's logs and sockets: leave no /tmp/lnray*


def reference(k, evaluator=None, budget=40, seed=3):
    space = toy_space()
    return layernas.search(space, SerialExecutor(evaluator or AdditiveEvaluator(space), k),
                           budget=budget, target=TARGET, seed=seed, searcher_options=PAPER)


def drain(executor, n, timeout=60):
    out, deadline = [], time.time() + timeout
    while len(out) < n and time.time() < deadline:
        out += executor.wait(timeout=1.0)
    assert len(out) == n, f"only {len(out)} of {n} results within {timeout} s"
    return {r.trial_id: r for r in out}


# -- dispatch -----------------------------------------------------------------------------

def test_dispatch_factory_exceptions_and_bad_input(cluster):
    space = toy_space()
    trials = [Trial(i, tuple(int(a) for a in np.random.default_rng(i).integers(0, 4, 5)), 100 + i)
              for i in range(5)]
    local = {t.trial_id: AdditiveEvaluator(space).evaluate(t) for t in trials}
    # a zero-arg factory, built inside each worker
    with RayExecutor(lambda: FailingEvaluator(space, victim=3, mode="raise"), max_in_flight=2) as ex:
        assert not ex._owns_ray  # joined the running cluster; close() leaves it up
        for t in trials:
            ex.submit(t)
        got = drain(ex, 5)
        assert 1 <= ex.stats["workers_started"] <= 2 and ex.stats["worker_deaths"] == 0
    for i in (0, 1, 2, 4):
        assert got[i] == local[i]
    assert got[3].status == "failed" and got[3].error == "ValueError: trial 3 is broken"
    assert ray.is_initialized()
    # a factory that cannot build the evaluator stops with the worker's error
    ex = RayExecutor(broken_factory, max_in_flight=1)
    ex.submit(trials[0])
    with pytest.raises(RayBackendError, match="could not build the evaluator.*no accelerator here"):
        ex.wait(timeout=60)
    ex.close()
    for bad, match in ((dict(max_in_flight=0), "max_in_flight"), (dict(num_gpus=-1), "num_gpus"),
                       (dict(num_gpus=1.5), "whole number"), (dict(max_retries=-1), "max_retries")):
        with pytest.raises(ValueError, match=match):
            RayExecutor(AdditiveEvaluator(space), **bad)
    with pytest.raises(TypeError, match="evaluate"):
        RayExecutor(42)
    # resources that no node has would wait forever: refused up front
    for bad in (dict(num_gpus=1), dict(num_cpus=3), dict(resources={"TPU": 4})):
        with pytest.raises(ValueError, match="no Ray node has the resources"):
            RayExecutor(AdditiveEvaluator(space), **bad)
    assert ray.is_initialized()


def test_more_slots_than_the_cluster_has_still_finishes(cluster):
    # 3 slots x 1 CPU on a 2-CPU cluster: the third actor never starts, and must not hold work
    space = toy_space()
    with make_ray_executor(lambda: AdditiveEvaluator(space), address=cluster, max_concurrent=3) as ex:
        for i in range(6):
            ex.submit(Trial(i, (0, 1, 2, 3, 0), i))
        got = drain(ex, 6, timeout=30)
    assert sorted(got) == list(range(6)) and all(r.ok for r in got.values())


# -- order independence -------------------------------------------------------------------

def test_same_history_and_state_as_a_local_run(cluster):
    # 3 in flight on 2 CPUs: one slot waits for a CPU, and random sleeps reorder the rest
    k = 3
    space = toy_space()
    ref = reference(k)
    with RayExecutor(JitterEvaluator(space, max_sleep=0.03), max_in_flight=k) as ex:
        arrival = []
        original_wait = ex.wait

        def recording_wait(timeout=None):
            results = original_wait(timeout)
            arrival.extend(r.trial_id for r in results)
            return results

        ex.wait = recording_wait
        result = layernas.search(space, ex, budget=40, target=TARGET, seed=3, searcher_options=PAPER)
    assert result.state == ref.state
    cols = ["trial_id", "arch_str", "reward", "cost_seconds", "feasible", "status"]
    assert result.history[cols].equals(ref.history[cols])
    assert result.best == ref.best
    assert sorted(arrival) == list(range(40))
    assert arrival != sorted(arrival), "test is vacuous: results arrived in order"


# -- worker faults ------------------------------------------------------------------------

def test_killed_worker_is_retried_then_failed_with_the_reason(cluster, tmp_path):
    space = toy_space()
    pids = tmp_path / "pids"
    pids.mkdir()
    # trial 0: killed once, succeeds on the retry; trial 1: killed 3 times -> failed
    kills_wanted = {0: 1, 1: 3}
    trials = [Trial(i, (i % 4, 1, 2, 3, 0), i) for i in range(5)]
    ex = RayExecutor(PidEvaluator(space, pids, slow=(0, 1), sleep=1.0), max_in_flight=2, max_retries=2)
    killed: dict[int, set[int]] = {0: set(), 1: set()}
    for t in trials:
        ex.submit(t)
    got, deadline = {}, time.time() + 60
    while len(got) < 5 and time.time() < deadline:
        for r in ex.wait(timeout=0.05):
            got[r.trial_id] = r
        for f in pids.iterdir():
            trial_id, pid = map(int, f.name.split("."))
            if trial_id in killed and pid not in killed[trial_id] and len(killed[trial_id]) < kills_wanted[trial_id]:
                os.kill(pid, signal.SIGKILL)  # mid-trial: the trial sleeps 1 s
                killed[trial_id].add(pid)
    ex.close()
    assert sorted(got) == list(range(5))
    assert {i: len(p) for i, p in killed.items()} == kills_wanted
    assert got[0].ok and got[0] == AdditiveEvaluator(space).evaluate(trials[0])
    assert got[1].status == "failed"
    assert got[1].error.startswith("worker died 3 times (max_retries=2)")
    assert "pid" in got[1].error and "ActorDiedError" in got[1].error
    assert all(got[i].ok for i in (2, 3, 4))
    assert ex.stats["worker_deaths"] == 4 and ex.stats["retries"] == 3
    # each attempt of trial 1 ran in a fresh worker process
    assert len({f.name for f in pids.iterdir() if f.name.startswith("1.")}) == 3


def test_search_goes_on_when_a_worker_keeps_dying(cluster):
    space = toy_space()
    victim = 4
    ref = reference(2, FailingEvaluator(space, victim, mode="raise"), budget=30)
    with RayExecutor(FailingEvaluator(space, victim, mode="die"), max_in_flight=2, max_retries=1) as ex:
        result = layernas.search(space, ex, budget=30, target=TARGET, seed=3, searcher_options=PAPER)
    row = result.history.set_index("trial_id").loc[victim]
    assert row.status == "failed" and row.error.startswith("worker died 2 times (max_retries=1)")
    assert (result.history.status == "ok").sum() == 29
    # the failure is seen by the searcher exactly as a local failure would be
    assert list(result.history.arch_str) == list(ref.history.arch_str)
    assert result.state == ref.state


# -- driver killed and resumed -------------------------------------------------------------

DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np, layernas
from layernas.executors import RayExecutor
from layernas.target import Target
from toy_spaces import AdditiveSpace
from test_ray_backend import JitterEvaluator
space = AdditiveSpace.random(np.random.default_rng(11), 5, 4, max_cost=9)
with RayExecutor(JitterEvaluator(space, max_sleep=0.1, log={log!r}), max_in_flight={k},
                  address={address!r}) as ex:
    result = layernas.search(space, ex, budget=40, target=Target("cost", max=20), seed=3,
                             out_dir={out!r}, resume=True, searcher_options={{"preset": "paper"}})
print(result.best["arch_str"])
"""


def checkpoint(out: Path) -> dict:
    return json.loads((out / "checkpoint.json").read_text())


def test_killed_driver_resumes_only_unfinished_trials(cluster, tmp_path):
    k = 2
    out = tmp_path / "run"
    ref = reference(k)
    kills, sessions = 0, []
    for session in range(6):
        log = tmp_path / f"evals{session}.log"
        ckpt = checkpoint(out) if (out / "checkpoint.json").exists() else None
        # every result received is in the journal; the snapshot may be a step behind it
        done_before = {r.trial_id: r.reward for r in finished_results(out)}
        in_flight_before = {t["trial_id"] for t in ckpt["in_flight"]} - set(done_before) if ckpt else set()
        script = DRIVER.format(tests=str(TESTS), log=str(log), out=str(out), k=k, address=cluster)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if kills < 2:
            deadline = time.time() + 60
            while time.time() < deadline and proc.poll() is None:
                if log.exists() and len(log.read_text().split()) >= 4:
                    break
                time.sleep(0.01)
            time.sleep(random.uniform(0, 0.1))
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            stdout = None
        else:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr[-3000:]
        evaluated = list(map(int, log.read_text().split())) if log.exists() else []
        sessions.append((done_before, in_flight_before, evaluated))
        redone = set(done_before) & set(evaluated)
        assert not redone, f"finished trials {sorted(redone)} were evaluated again"
        kept = {r.trial_id: r.reward for r in finished_results(out)}
        lost = {i for i in done_before if i not in kept or kept[i] != done_before[i]}
        assert not lost, f"finished results {sorted(lost)} were lost"
        if stdout is not None:
            break
    assert kills == 2
    # each resumed session re-dispatched what was in flight when its driver was killed
    for done_before, in_flight_before, evaluated in sessions[1:]:
        assert in_flight_before <= set(evaluated)
    assert any(in_flight for _, in_flight, _ in sessions[1:]), "no trial was in flight at a kill"
    assert stdout.strip() == ref.best["arch_str"]
    import pandas as pd

    history = pd.read_csv(out / "history.csv")
    assert list(history.trial_id) == list(range(40))
    assert list(history.arch_str) == list(ref.history.arch_str)
    np.testing.assert_allclose(history.reward, ref.history.reward)
    assert json.loads((out / "result.json").read_text())["best"]["arch_str"] == ref.best["arch_str"]


def test_importing_layernas_does_not_import_ray():
    code = ("import sys, layernas, layernas.executors, layernas.executors.ray, layernas.cli; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
