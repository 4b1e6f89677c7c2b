"""The trained-child store, the seeded proxy protocol and warm start (real training, tiny tss nets)."""

from __future__ import annotations

import multiprocessing
import sqlite3

import numpy as np
import pytest

import layernas
from layernas.evaluator import Trial
from layernas.search_spaces.nats_tss import NatsTss
from layernas.target import Target
from layernas.trainers import data as data_lib
from layernas.trainers import train as train_lib
from layernas.trainers.child_store import ChildStore
from layernas.trainers.stored_evaluator import StoredTrainerEvaluator, draw_training_seed
from layernas.trainers.warm_start import WarmStart

TINY = train_lib.Recipe(name="tiny", epochs=2, batch_size=32, learning_rate=0.05, schedule="constant")
MODEL = {"C": 2, "N": 1}


def tiny_data(seed: int = 0):
    ds = data_lib.synthetic_dataset(num_classes=4, per_class=24, size=16, seed=seed)
    return data_lib.split_validation(ds, per_class=6, seed=0)


def evaluator(store, **kw) -> StoredTrainerEvaluator:
    return StoredTrainerEvaluator(NatsTss("cifar10"), tiny_data(), TINY, store=store, model_kwargs=MODEL, **kw)


def search(store, out, budget, searcher="random", resume=False, seed=0, flops=0.5, **kw):
    space = NatsTss("cifar10")
    target = Target("flops", max=flops * space.cost_bounds((), "flops")[1])
    return layernas.search(space, evaluator(store, **kw), layernas.Budget(evaluations=budget), target, seed=seed,
                           searcher=searcher, out_dir=out, resume=resume)


def history_rows(result):
    h = result.history
    return list(zip(h["arch_str"], h["reward"], h["child"], h["training_seed"]))


def test_two_runs_reuse_every_child(tmp_path):
    store = tmp_path / "store"
    first = search(store, tmp_path / "run1", 4)
    second = search(store, tmp_path / "run2", 4)
    a, b = history_rows(first), history_rows(second)
    assert [r[2] for r in a] == ["trained"] * 4
    assert [r[2] for r in b] == ["reused"] * 4  # nothing trained again
    assert [r[:2] + r[3:] for r in a] == [r[:2] + r[3:] for r in b]  # same archs, rewards, seeds
    assert len(ChildStore(store)) == 4


def _worker(store, trials, barrier, queue):
    ev = evaluator(store)
    barrier.wait()  # both processes ask for the same children at the same moment
    out = []
    for t in trials:
        r = ev.evaluate(Trial(*t))
        out.append((t[0], r.reward, r.info["child"], r.status))
    queue.put(out)


def test_two_processes_train_each_child_once(tmp_path):
    store = tmp_path / "store"
    ChildStore(store)  # create the schema before the race (both would, harmlessly)
    archs = [(0, 1, 2, 3, 4, 0), (3, 3, 1, 1, 2, 2), (2, 2, 2, 2, 2, 2)]
    trials = [(i, a, 7) for i, a in enumerate(archs)]  # seed 7: the same training seed for all
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(store, trials, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    hows = [how for res in results for _, _, how, _ in res]
    assert hows.count("trained") == len(archs) and hows.count("reused") == len(archs)
    for (i, r0, _, s0), (j, r1, _, s1) in zip(*results):
        assert i == j and s0 == s1 == "ok" and r0 == r1  # the waiter got the trainer's result
    with sqlite3.connect(store / "index.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM children").fetchone()[0] == len(archs)
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # every claim released


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_entry_is_dropped_and_retrained(tmp_path, damage):
    store = ChildStore(tmp_path / "store")
    trial = Trial(0, (3, 1, 0, 2, 4, 3), 11)
    first = evaluator(store).evaluate(trial)
    assert first.ok and first.info["child"] == "trained"
    blob = next((tmp_path / "store" / "blobs").rglob("*.msgpack"))
    data = bytearray(blob.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    elif damage == "truncate":  # a half-written file
        blob.write_bytes(bytes(data[: len(data) // 2]))
    else:
        blob.unlink()
    again = evaluator(ChildStore(tmp_path / "store"))
    second = again.evaluate(trial)
    assert second.ok and second.info["child"] == "trained"  # dropped and trained again, no crash
    assert again.store.dropped == [first.info["store_key"]]
    assert second.reward == first.reward  # same seed, same deterministic CPU training
    third = evaluator(ChildStore(tmp_path / "store")).evaluate(trial)
    assert third.info["child"] == "reused"


def test_claim_of_a_dead_process_is_taken_over(tmp_path):
    store = ChildStore(tmp_path / "store")
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_claim_and_exit, args=(tmp_path / "store",))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    assert store.claim("k")  # its owner is gone: taken over at once, no lease wait


def _claim_and_exit(path):
    assert ChildStore(path).claim("k")


def test_seed_draw_is_uniform_and_a_resumed_run_is_identical(tmp_path):
    draws = [draw_training_seed(s, 3) for s in range(3000)]
    assert set(draws) == {0, 1, 2} and all(abs(draws.count(k) - 1000) < 100 for k in range(3))
    run = dict(searcher="layernas", flops=1.0)  # every child feasible: the answer is the best of 5
    whole = search(tmp_path / "a", tmp_path / "whole", 5, **run)
    search(tmp_path / "b", tmp_path / "cut", 2, **run)
    resumed = search(tmp_path / "b", tmp_path / "cut", 5, resume=True, **run)
    assert history_rows(whole) == history_rows(resumed)
    assert len({r[3] for r in history_rows(whole)}) > 1  # the queries drew different seeds
    assert whole.best["arch"] == resumed.best["arch"]


def test_warm_start_copies_unchanged_layers_at_step_zero(tmp_path, monkeypatch):
    store = ChildStore(tmp_path / "store")
    ev = evaluator(store, warm_start=WarmStart(epochs=1))
    parent_arch, child_arch = (3, 3, 3, 3, 3, 3), (3, 3, 2, 3, 3, 3)  # edge 2<-1: conv3x3 -> conv1x1
    parent = ev.evaluate(Trial(0, parent_arch, 5))
    assert parent.info["mode"] == "scratch"
    seen = {}
    real = train_lib.train_model

    def spy(model, tr, va, recipe, seed, **kw):
        seen.update(initial=kw.get("initial_variables"), epochs=recipe.epochs, seed=seed)
        return real(model, tr, va, recipe, seed, **kw)

    monkeypatch.setattr(train_lib, "train_model", spy)
    same = parent.info["training_seed"]  # a trial seed that draws the parent's training seed
    child_seed = next(s for s in range(100) if ev.training_seed(Trial(1, child_arch, s)) == same)
    child = ev.evaluate(Trial(1, child_arch, child_seed))
    assert child.ok and child.info["mode"] == "warm-1ep" and seen["epochs"] == 1
    assert child.info["warm_from"] == NatsTss("cifar10").arch_to_str(parent_arch)
    stored = store.get(parent.info["store_key"])
    fresh = train_lib.init_variables(ev.build(child_arch), (1, 16, 16, 3), seen["seed"])
    import jax

    inherited = changed = 0
    for (path, leaf), (_, new) in zip(jax.tree_util.tree_flatten_with_path(seen["initial"])[0],
                                      jax.tree_util.tree_flatten_with_path(fresh)[0]):
        names = [str(getattr(k, "key", k)) for k in path]
        if "edge_2_1" in names:  # the changed edge starts fresh, as from scratch
            np.testing.assert_array_equal(leaf, new)
            changed += 1
        else:  # every other layer: the parent's trained weights and BN statistics
            node = stored.variables
            for n in names:
                node = node[n]
            np.testing.assert_array_equal(leaf, node)
            assert not np.array_equal(leaf, new) or names[-1] in ("mean", "var", "bias", "scale")
            inherited += 1
    assert changed >= 3 and inherited > 20  # conv kernel + BN scale/bias/mean/var of the new op


def test_a_store_that_cannot_be_opened_is_a_one_line_error(tmp_path):
    from layernas.trainers.child_store import StoreError

    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file; expected a directory"):
        ChildStore(tmp_path / "file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.sqlite").write_bytes(b"not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open child store .*not a database"):
        ChildStore(tmp_path / "bad")


def test_an_explicit_training_seed_trains_that_child_and_is_checked(tmp_path):
    ev = evaluator(tmp_path / "store", training_seeds=3)
    arch = (1, 2, 3, 4, 0, 1)
    drawn = ev.training_seed(Trial(0, arch, 7))
    other = (drawn + 1) % 3
    r = ev.evaluate(Trial(0, arch, 7), training_seed=other)
    assert r.ok and r.info["training_seed"] == other and r.info["child"] == "trained"
    again = ev.evaluate(Trial(1, arch, 7))  # the drawn seed: another child, trained now
    assert again.info["training_seed"] == drawn and again.info["child"] == "trained"
    assert ev.evaluate(Trial(2, arch, 0), training_seed=other).info["child"] == "reused"
    with pytest.raises(ValueError, match="training_seed=3; expected 0..2"):
        ev.evaluate(Trial(3, arch, 0), training_seed=3)
