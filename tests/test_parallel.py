"""Data-parallel, candidate-parallel and two-process training on CPU (in subprocesses)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from layernas import executors

COMMON = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, jax.numpy as jnp, flax.linen as nn
    from layernas.evaluator import Trial
    from layernas import executors
    from layernas.trainers import data, evaluator, nats_models, parallel, train
    ds = data.synthetic_dataset(num_classes=4, per_class=24, size=8)
    pair = data.split_validation(ds, per_class=4, seed=0)
    recipe = train.Recipe(name="t", epochs=2, batch_size=16, learning_rate=0.05, check_every=5, eval_batch_size=16)
    class TinyNet(nn.Module):
        width: int = 4
        num_classes: int = 4
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Conv(self.width, (3, 3), use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
            return nn.Dense(self.num_classes)(jnp.mean(x, (1, 2)))
    class Space:
        name = "tiny"
        def build(self, arch, num_classes=4):
            return TinyNet((4, 8)[arch[0]], num_classes)
""")

FOUR_DEVICES = COMMON + textwrap.dedent("""
    devs = jax.devices()
    assert len(devs) == 4, devs
    model = TinyNet(4, 4)
    one = train.train_model(model, *pair, recipe, 0, placement=devs[0])
    dp = parallel.train_data_parallel(model, *pair, recipe, 0)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), one.variables, dp.variables))
    out = {"dp_max_param_diff": max(diffs), "one_hist": one.history, "dp_hist": dp.history,
           "one_acc": one.valid_accuracy, "dp_acc": dp.valid_accuracy}

    # candidate-parallel on devices 1 and 2; child 0 repeats `one` (device 0) exactly
    models = [TinyNet(4, 4), TinyNet(8, 4)]
    used = []
    def run(m, dev):
        used.append(dev.id)
        r = train.train_model(m, *pair, recipe, 0, placement=dev)
        return r.history, r.valid_accuracy
    par = executors.map_on_devices(run, models, devs[1:3])
    out["cand_equal_one"] = par[0][0] == one.history and par[0][1] == one.valid_accuracy
    out["devices_used"] = sorted(set(used))
    out["par_rewards"] = [p[1] for p in par]

    ex = executors.DeviceParallelExecutor(evaluator.TrainerEvaluator(Space(), pair, recipe), devs[1:3])
    for i, arch in enumerate([(0,), (1,)]):
        ex.submit(Trial(i, arch, seed=0))
    got = []
    while len(got) < 2:
        got += ex.wait()
    ex.close()
    out["executor"] = sorted((r.trial_id, r.reward, r.ok) for r in got)
    print("RESULT" + json.dumps(out))
""")

TWO_PROCESS = COMMON + textwrap.dedent("""
    pid, port, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    executors.initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    ev = evaluator.TrainerEvaluator(Space(), pair, recipe, work_dir=work)
    trials = [Trial(i, arch, seed=7) for i, arch in enumerate([(0,), (1,), (0,)])]
    res = executors.evaluate_distributed(ev, trials)
    # the Executor form: a collective wait(); these children are recorded, so nothing trains
    ex = executors.DistributedExecutor(ev)
    for i, t in enumerate(trials[:2]):
        ex.submit(Trial(10 + i, t.arch, t.seed))
    again = ex.wait()
    print("RESULT" + json.dumps({"pid": jax.process_index(), "count": jax.process_count(),
                                 "max_in_flight": ex.max_in_flight,
                                 "results": [r.to_dict() for r in res],
                                 "executor": [(r.trial_id, r.reward) for r in again]}))
""")


def _run_env(**extra):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _result(stdout: str) -> dict:
    line = [l for l in stdout.splitlines() if l.startswith("RESULT")]
    assert line, stdout
    return json.loads(line[-1][len("RESULT"):])


def test_four_devices_data_and_candidate_parallel():
    proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES], capture_output=True, text=True, timeout=600,
                          env=_run_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _result(proc.stdout)
    # data-parallel over 4 devices = single device, up to float reduction order
    assert out["dp_max_param_diff"] < 1e-3, out
    for a, b in zip(out["one_hist"], out["dp_hist"]):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-3
    assert abs(out["one_acc"] - out["dp_acc"]) <= 100.0 / 16 + 1e-9  # at most one of 16 images flips
    # candidate-parallel: two children at once on devices 1 and 2; identical to device 0
    assert out["cand_equal_one"] is True
    assert out["devices_used"] == [1, 2]
    assert [t for t, _, ok in out["executor"]] == [0, 1] and all(ok for *_, ok in out["executor"])
    assert [r for _, r, _ in out["executor"]] == out["par_rewards"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(argv_of, n: int = 2, timeout: float = 600, expect_rc: int = 0) -> list[subprocess.CompletedProcess]:
    """Start ``n`` processes at once, ``argv_of(process_id, port)`` each (``port``: a free
    loopback port for the jax.distributed coordinator), and wait for all of them.

    Args:
      argv_of: (process id, port) -> the argv of that process.
      n: how many processes.
      timeout: seconds to wait for each.
      expect_rc: the exit code every process must have (asserted, with its stderr).
    Returns:
      one CompletedProcess per process, in process order.
    """
    port = str(_free_port())
    procs = [subprocess.Popen(argv_of(i, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_run_env()) for i in range(n)]
    outputs: dict[int, tuple[str, str]] = {}

    def drain(i: int) -> None:  # every process's pipes are read at once: none can block on a full pipe
        try:
            outputs[i] = procs[i].communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            procs[i].kill()
            outputs[i] = procs[i].communicate()

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [subprocess.CompletedProcess(p.args, p.returncode, *outputs[i]) for i, p in enumerate(procs)]
    # on failure, show every process's exit code and stderr: the failing one is often not the first
    assert all(d.returncode == expect_rc for d in done), "\n".join(
        f"--- process {i}: exit {d.returncode}\n{d.stderr[-2000:]}" for i, d in enumerate(done))
    return done


def test_two_processes_split_children_and_gather(tmp_path):
    outs = [_result(p.stdout) for p in
            run_processes(lambda i, port: [sys.executable, "-c", TWO_PROCESS, str(i), port, str(tmp_path)])]
    assert [o["pid"] for o in outs] == [0, 1] and all(o["count"] == 2 for o in outs)
    assert outs[0]["results"] == outs[1]["results"]  # every process has every result
    res = outs[0]["results"]
    assert [r["trial_id"] for r in res] == [0, 1, 2] and all(r["status"] == "ok" for r in res)
    # round-robin share: process 0 trained trials 0 and 2, process 1 trial 1
    assert [r["info"]["process_index"] for r in res] == [0, 1, 0]
    # trials 0 and 2 are the same child and seed: process 0 trained it once and reused it
    assert res[2]["info"].get("cached") is True and res[2]["reward"] == res[0]["reward"]
    assert len(list((tmp_path / "children").glob("*/result.json"))) == 2
    assert len(list((tmp_path / "children").glob("*/variables"))) == 2
    for o in outs:
        assert o["max_in_flight"] == 2
        assert o["executor"] == [[10, res[0]["reward"]], [11, res[1]["reward"]]]


def test_process_share_round_robin():
    items = list(range(7))
    shares = [executors.process_share(items, i, 3) for i in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(ValueError, match="process_index"):
        executors.process_share(items, 3, 3)
    assert executors.gather_objects([{"a": 1}]) == [{"a": 1}]  # one process: identity


# ------------------------------------------------------------------ multi-host search
# Every process runs this same script: the same seeded search, joined by jax.distributed.
# A counting wrapper records which trials this process evaluated itself.
TABLE_SEARCH = textwrap.dedent("""
    import json, sys
    pid, port, out, budget, resume = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
    from layernas import executors
    executors.initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    import layernas
    from layernas.search_spaces.nats_tss import NatsTss
    from layernas.table_evaluator import TableEvaluator
    from layernas.tables import default_table
    space = NatsTss("cifar10")
    target = layernas.Target("flops", max=0.5 * space.cost_bounds((), "flops")[1])
    class Counting:
        def __init__(self, ev):
            self.ev, self.seen = ev, []
        def evaluate(self, trial):
            self.seen.append(trial.trial_id)
            return self.ev.evaluate(trial)
    ev = Counting(TableEvaluator(default_table(), "cifar10", space))
    res = layernas.search(space, ev, budget, target, seed=1, out_dir=out, resume=resume)
    out = res.to_json()
    out.pop("wall_seconds")
    print("RESULT" + json.dumps({"pid": pid, "seen": ev.seen, "result": out,
                                 "history": res.history.to_dict(orient="list")}, default=str))
""")


def _table_search_reference(budget: int):
    """The same search as TABLE_SEARCH in this one process (max_in_flight = 2 devices)."""
    import layernas
    from layernas.search_spaces.nats_tss import NatsTss
    from layernas.table_evaluator import TableEvaluator
    from layernas.tables import default_table

    space = NatsTss("cifar10")
    target = layernas.Target("flops", max=0.5 * space.cost_bounds((), "flops")[1])
    return layernas.search(space, TableEvaluator(default_table(), "cifar10", space), budget, target, seed=1,
                           max_in_flight=2)


def _same_json(a: dict, b: dict) -> bool:
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def test_two_process_search_splits_trials_and_only_process_0_writes(tmp_path):
    # process 1 is given its own out dir (on a pod it is the same path) to show that it never
    # touches it: it must not even be created
    outs = {0: tmp_path / "run", 1: tmp_path / "run-of-process-1"}

    def argv(budget, resume):
        return lambda i, port: [sys.executable, "-c", TABLE_SEARCH, str(i), port, str(outs[i]), str(budget), resume]

    first = [_result(p.stdout) for p in run_processes(argv(40, "0"))]
    assert not outs[1].exists()
    assert sorted(p.name for p in outs[0].iterdir() if not p.name.startswith(".")) == [
        "checkpoint.json", "cost_reward.png", "frontier.csv", "history.csv", "journal.jsonl", "progress.png",
        "report.html", "result.json"]
    # every process returns the same result, history included
    assert first[0]["result"] == first[1]["result"] and first[0]["history"] == first[1]["history"]
    # each process evaluated only its round-robin share, and together every trial once
    seen0, seen1 = set(first[0]["seen"]), set(first[1]["seen"])
    assert seen0 and seen1 and not seen0 & seen1 and seen0 | seen1 == set(range(40))
    rows = json.loads((outs[0] / "checkpoint.json").read_text())["history"]
    assert {r["trial_id"] for r in rows if r["info"]["process_index"] == 1} == seen1

    # resume with a larger budget: process 0's checkpoint is shipped to process 1; only the
    # 20 new trials are evaluated, and the answer equals one uninterrupted 60-trial run
    second = [_result(p.stdout) for p in run_processes(argv(60, "1"))]
    assert not outs[1].exists()
    assert second[0]["result"] == second[1]["result"]
    new0, new1 = set(second[0]["seen"]), set(second[1]["seen"])
    assert new0 and new1 and not new0 & new1 and new0 | new1 == set(range(40, 60))
    assert second[0]["history"]["reward"][:40] == first[0]["history"]["reward"]

    # equal to a single-process run with the same seed and trials per round
    ref = _table_search_reference(60)
    got = second[0]["result"]
    assert got["best"] is not None and got["evaluations"] == 60
    assert got["best"] == json.loads(json.dumps(ref.best))
    ref_json = ref.to_json()
    ref_json.pop("wall_seconds")
    assert _same_json(got, ref_json)
    assert second[0]["history"]["arch_str"] == list(ref.history["arch_str"])


def run_cli_processes(argv: list[str], outs: dict, expect_rc: int = 0) -> list[subprocess.CompletedProcess]:
    """``layernas <argv> --out outs[i]`` as process i of two, joined on a loopback coordinator."""
    return run_processes(lambda i, port: [sys.executable, "-m", "layernas.cli", *argv, "--out", str(outs[i]),
                                          "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                          "--process-id", str(i)], expect_rc=expect_rc)


def _json_without_wall(text: str) -> dict:
    """A ``--json`` result without ``wall_seconds`` (each process's own clock)."""
    result = json.loads(text)
    result.pop("wall_seconds")
    return result


def test_cli_distributed_search_equals_one_process(tmp_path, capsys):
    from layernas.cli import main

    common = ["search", "--space", "nats-tss", "--flops-fraction", "0.5", "--budget-evals", "60", "--seed", "1",
              "--quiet", "--json"]
    outs = {0: tmp_path / "run", 1: tmp_path / "run-of-process-1"}
    results = [_json_without_wall(p.stdout) for p in run_cli_processes(common, outs)]
    assert results[0] == results[1] and results[0]["evaluations"] == 60 and results[0]["best"] is not None
    assert results[0]["settings"]["max_in_flight"] == 2  # one device per process
    assert (outs[0] / "checkpoint.json").exists() and not outs[1].exists()
    rows = json.loads((outs[0] / "checkpoint.json").read_text())["history"]
    assert {r["info"]["process_index"] for r in rows} == {0, 1}
    # process 0's error (the run exists, no --resume) reaches every process: all exit 2
    for p in run_cli_processes(common, outs, expect_rc=2):
        assert "already holds a search; pass --resume" in p.stderr and "Traceback" not in p.stderr
    assert not outs[1].exists()
    # one process, two trials in flight, same seed: the same search
    assert main([*common, "--out", str(tmp_path / "single"), "--max-in-flight", "2"]) == 0
    assert _json_without_wall(capsys.readouterr().out) == results[0]


@pytest.mark.slow
def test_cli_distributed_trainer_search_on_cifar10(tmp_path, capsys, cifar10_dir):
    """Two processes, each training its child of every round on real CIFAR-10 (tiny recipe).

    Slow: 31 s with a cold compilation cache, 22 s warm, on the idle 2-core CPU VM (six sss children:
    four over the two processes, two again in the one-process reference run)."""
    from layernas.cli import main

    common = ["search", "--space", "nats-sss", "--trainer", "proxy", "--data", str(cifar10_dir), "--epochs", "1",
              "--train-per-class", "12", "--valid-per-class", "4", "--batch-size", "32", "--budget-evals", "4",
              "--quiet", "--json"]
    outs = {0: tmp_path / "run", 1: tmp_path / "run-of-process-1"}
    results = [_json_without_wall(p.stdout) for p in run_cli_processes(common, outs)]
    assert results[0] == results[1] and results[0]["evaluations"] == 4
    rows = json.loads((outs[0] / "checkpoint.json").read_text())["history"]
    assert [r["info"]["process_index"] for r in rows] == [0, 1, 0, 1]
    assert all(r["status"] == "ok" and r["info"]["steps"] == 2 for r in rows)
    # process 1 wrote no run file; only the records of the two children it trained
    # (orbax variables + result.json, under the same out-dir layout: on a pod, one shared folder)
    assert sorted(p.name for p in outs[1].iterdir()) == ["trainer"]
    assert len(list((outs[1] / "trainer" / "children").glob("*/variables"))) == 2
    assert len(list((outs[0] / "trainer" / "children").glob("*/variables"))) == 2
    # one process, two trials in flight, same seed: the same children and rewards
    assert main([*common, "--out", str(tmp_path / "single"), "--max-in-flight", "2"]) == 0
    single = json.loads(capsys.readouterr().out)
    single_rows = json.loads((tmp_path / "single" / "checkpoint.json").read_text())["history"]
    assert [(r["arch_str"], r["reward"]) for r in single_rows] == [(r["arch_str"], r["reward"]) for r in rows]
    assert single["best"]["arch_str"] == results[0]["best"]["arch_str"]


def test_distributed_true_without_jax_distributed_is_a_run_error():
    import layernas
    from layernas.search_spaces.nats_tss import NatsTss
    from layernas.table_evaluator import TableEvaluator
    from layernas.tables import default_table

    space = NatsTss("cifar10")
    with pytest.raises(layernas.RunError, match=r"jax.distributed.initialize\(\) to be called first"):
        layernas.search(space, TableEvaluator(default_table(), "cifar10", space), 5, distributed=True)
    with pytest.raises(ValueError, match="max_in_flight=0"):
        executors.DistributedExecutor(object(), max_in_flight=0)


def test_cli_distributed_without_a_cluster_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "layernas.cli", "search", "--space", "nats-tss", "--distributed",
                           "--quiet"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_run_env())
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layernas: error: jax.distributed.initialize:"), proc.stderr
    assert "--coordinator HOST:PORT" in lines[0] and not (tmp_path / "runs").exists()
