"""End to end: LayerNAS over the real NATS sss space with the trainer evaluator (slow)."""

from __future__ import annotations

import pytest

import layernas
from layernas.trainers import data, evaluator, train


@pytest.mark.slow
def test_layernas_search_with_trainer_resumes_without_retraining(tmp_path, monkeypatch):
    from layernas.registry import make_space

    space = make_space("nats-sss", "cifar10")
    ds = data.synthetic_dataset(num_classes=4, per_class=24, size=8)
    pair = data.split_validation(ds, per_class=4, seed=0)
    recipe = train.Recipe(name="tiny", epochs=1, batch_size=16, learning_rate=0.05)
    ev = evaluator.TrainerEvaluator(space, pair, recipe, work_dir=tmp_path / "children")
    res = layernas.search(space, ev, 3, out_dir=tmp_path / "run", seed=0)
    assert res.best is not None and res.evaluations == 3
    rewards = list(res.history["reward"])
    assert len(list((tmp_path / "children").glob("children/*/result.json"))) == 3

    def boom(*a, **k):
        raise AssertionError("retrained")

    monkeypatch.setattr(train, "train_model", boom)
    ev2 = evaluator.TrainerEvaluator(space, pair, recipe, work_dir=tmp_path / "children")
    res2 = layernas.search(space, ev2, 3, out_dir=tmp_path / "run2", seed=0)  # same trials, all recorded
    assert list(res2.history["reward"]) == rewards and res2.best["arch"] == res.best["arch"]
