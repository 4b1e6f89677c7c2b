"""Precise BatchNorm (``Recipe.bn_recalibration_batches``): the per-batch statistics are
those of the batch whatever the layer's momentum, the recalibrated running statistics are
their mean, training is untouched, and recipes without the option keep their store keys."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layernas.trainers import data, loop, train


class InputBN(nn.Module):
    """BatchNorm straight on the (normalised) input, then a linear classifier: its batch
    statistics are the input's per-channel mean and (biased) variance."""

    momentum: float
    offset: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-5)(x + self.offset)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def _task(momentum: float, per_class: int = 8):
    ds = data.synthetic_dataset(num_classes=10, per_class=per_class, size=8, seed=1)
    return train.ClassifierTask(InputBN(momentum), ds, augment=False), ds


@pytest.mark.parametrize("momentum", [0.0, 0.9, 0.99])
def test_batch_statistics_are_the_batch_mean_and_variance_for_any_momentum(momentum):
    task, ds = _task(momentum)
    variables = task.init(0)
    consts = ds.channel_stats()
    images = ds.images[:16]
    got = jax.jit(task.batch_statistics)(variables, {"images": images}, consts)["BatchNorm_0"]
    x = np.asarray(data.normalize(images, *consts), np.float64)
    np.testing.assert_allclose(got["mean"], x.mean(axis=(0, 1, 2)), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(got["var"], x.var(axis=(0, 1, 2)), rtol=2e-4, atol=2e-5)


def test_recalibration_is_the_mean_over_the_batches_and_at_most_one_pass():
    task, ds = _task(0.99)
    variables = task.init(0)
    consts = ds.channel_stats()
    placer = loop.Placer(None)
    order = list(data.epoch_batches(len(ds), 16, 3, 2))
    for batches in (2, 100):   # 100 asks for more than one pass: all 5 batches are used
        out = train.recalibrate_batch_norm(jax.jit(task.batch_statistics), ds.images, variables, consts, batches,
                                           16, 3, 2, placer)
        used = order[:batches]
        x = [np.asarray(data.normalize(ds.images[i], *consts), np.float64) for i in used]
        np.testing.assert_allclose(out["batch_stats"]["BatchNorm_0"]["mean"],
                                   np.mean([b.mean(axis=(0, 1, 2)) for b in x], axis=0), rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(out["batch_stats"]["BatchNorm_0"]["var"],
                                   np.mean([b.var(axis=(0, 1, 2)) for b in x], axis=0), rtol=2e-4, atol=2e-5)
        assert out["params"] is variables["params"]
    assert len(order) == 5


def test_train_model_recalibrates_only_the_evaluation():
    ds = data.synthetic_dataset(num_classes=10, per_class=12, size=8, seed=2)
    tr, va = data.split_validation(ds, per_class=4, seed=0)
    base = train.Recipe(name="t", epochs=1, batch_size=16, learning_rate=0.05, augment=False)
    model = InputBN(0.99, offset=3.0)   # the BatchNorm input's mean is 3
    plain = train.train_model(model, tr, va, base, seed=0)
    precise = train.train_model(model, tr, va, base.replace(bn_recalibration_batches=2), seed=0)
    assert plain.train_loss == precise.train_loss   # the same training
    np.testing.assert_array_equal(plain.variables["params"]["Dense_0"]["kernel"],
                                  precise.variables["params"]["Dense_0"]["kernel"])
    # 5 steps at momentum 0.99 leave the running mean near its start (0); precise BN is near 3
    assert np.abs(plain.variables["batch_stats"]["BatchNorm_0"]["mean"]).max() < 0.3
    x = np.asarray(data.normalize(tr.images, *tr.channel_stats()), np.float64) + 3.0
    np.testing.assert_allclose(precise.variables["batch_stats"]["BatchNorm_0"]["mean"], x.mean(axis=(0, 1, 2)),
                               atol=0.15)
    assert precise.valid_accuracy != plain.valid_accuracy or precise.valid_loss != plain.valid_loss


def test_recipe_identity_keeps_the_keys_of_recipes_without_new_fields():
    recipe = train.PROXY
    old = {k: v for k, v in dataclasses.asdict(recipe).items()
           if k not in ("name", "check_every", *loop.ADDED_FIELDS)}   # what children were stored under
    assert recipe.identity() == old
    assert recipe.identity(label=True)["name"] == "proxy"
    assert recipe.replace(bn_recalibration_batches=8).identity()["bn_recalibration_batches"] == 8
    with pytest.raises(ValueError, match="bn_recalibration_batches=-1"):
        train.Recipe(bn_recalibration_batches=-1)


def test_the_two_starting_points_cost_one_forward_pass():
    """XLA computes the two identical forward passes of ``batch_statistics`` once."""
    from layernas.trainers import nats_models

    ds = data.synthetic_dataset(num_classes=4, per_class=16, size=16)
    model = nats_models.build_sss((8, 8, 8, 8, 8), num_classes=4)
    task = train.ClassifierTask(model, ds)
    variables, consts, batch = task.init(0), ds.channel_stats(), {"images": ds.images[:16]}

    def one_forward(variables, batch, consts):
        _, new = model.apply(variables, data.normalize(batch["images"], *consts), train=True, mutable=["batch_stats"])
        return new["batch_stats"]

    def flops(fn):
        cost = jax.jit(fn).lower(variables, batch, consts).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    assert flops(task.batch_statistics) == pytest.approx(flops(one_forward), rel=0.01)
