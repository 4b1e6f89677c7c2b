"""SynFlow in JAX, against the product formula of a deep linear network and BN invariance."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from layernas.trainers import nats_models, train, zero_cost


class DeepLinear(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x, train: bool = False):
        for w in self.widths:
            x = nn.Dense(w, use_bias=False)(x)
        return x


@pytest.mark.parametrize("widths", [(4,), (5, 3), (6, 4, 4, 2)])
def test_synflow_of_a_linear_net_is_depth_times_the_path_product(widths):
    model = DeepLinear(widths)
    v = jax.device_get(model.init(jax.random.key(1), np.zeros((1, 3), np.float32)))
    kernels = [np.abs(np.asarray(v["params"][f"Dense_{i}"]["kernel"], np.float64)) for i in range(len(widths))]
    r = np.ones(3)
    for k in kernels:
        r = r @ k  # R = 1^T |W_1| ... |W_L| 1 (row-vector convention)
    expected = len(widths) * r.sum()  # Euler: each layer contributes R
    assert zero_cost.synflow(model, v, (1, 3), log=False) == pytest.approx(expected, rel=1e-9)
    assert zero_cost.synflow(model, v, (1, 3)) == pytest.approx(np.log(expected), rel=1e-9)


def test_synflow_ignores_batch_statistics_and_weight_signs():
    model = nats_models.build_tss(("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none",
                                   "nor_conv_3x3"), num_classes=10, C=4, N=1)
    v = train.init_variables(model, (1, 16, 16, 3), seed=0)
    base = zero_cost.synflow(model, v, (1, 16, 16, 3))
    assert np.isfinite(base)
    trained_like = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 3.0 + 1.0 if str(getattr(p[-1], "key", "")) in ("mean", "var") else a, v)
    flipped = dict(v, params=jax.tree_util.tree_map(lambda a: -a, v["params"]))
    assert zero_cost.synflow(model, trained_like, (1, 16, 16, 3)) == pytest.approx(base, rel=1e-12)
    assert zero_cost.synflow(model, flipped, (1, 16, 16, 3)) == pytest.approx(base, rel=1e-12)
    # a cell whose output node is cut off from the input carries no signal at all
    dead = nats_models.build_tss(("nor_conv_3x3",) * 3 + ("none",) * 3, num_classes=10, C=4, N=1)
    assert zero_cost.synflow(dead, train.init_variables(dead, (1, 16, 16, 3), 0), (1, 16, 16, 3)) == -np.inf
