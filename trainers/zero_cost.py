"""Zero-cost proxies in JAX: score an untrained network without any training.

:func:`synflow` is SynFlow (Tanaka et al., 2020, as used for NAS by Abdelfattah et al.,
2021): replace every parameter by its absolute value, feed an all-ones input, take
``R = sum(f(1))`` and score ``sum over parameters of |theta * dR/dtheta|``. It needs no
data and no labels. BatchNorm is made the identity (running mean 0, variance 1, and its
scale and bias taken as ``|1|`` and ``|0|``), as the reference implementation removes it.

For a network that is positively homogeneous of degree 1 in each layer's weights (no
biases, no normalisation), Euler's theorem gives ``sum(theta * dR/dtheta) = R`` per layer,
so the score is ``L * R`` for L layers: for a deep linear network
``R = 1^T |W_L| ... |W_1| 1``. The tests check that formula.

The score grows like a product over layers, so it is computed in float64 and
:func:`synflow` returns ``log(score)`` by default (``log=False``: the score itself).

Example:
    >>> import jax.numpy as jnp, flax.linen as nn
    >>> from layernas.trainers import zero_cost
    >>> model = nn.Dense(3, use_bias=False)
    >>> v = {"params": {"kernel": jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])}}
    >>> round(float(zero_cost.synflow(model, v, (1, 2), log=False, call=lambda m, v, x: m.apply(v, x))), 4)
    6.0
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _identity_norm_stats(variables):
    """Variables with BatchNorm statistics reset (mean 0, var 1): BN becomes the identity
    once its scale/bias are |1|/|0|, as in fresh init."""
    def reset(path, leaf):
        name = str(getattr(path[-1], "key", getattr(path[-1], "name", path[-1])))
        if name == "mean":
            return jnp.zeros_like(leaf)
        if name == "var":
            return jnp.ones_like(leaf)
        return leaf

    return {k: (jax.tree_util.tree_map_with_path(reset, v) if k != "params" else v) for k, v in variables.items()}


def _default_call(model, variables, x):
    return model.apply(variables, x, train=False)


def synflow(model, variables, input_shape: tuple[int, ...], *, log: bool = True,
            call: Callable | None = None) -> float:
    """The SynFlow score of ``model`` at ``variables``.

    Args:
      model: a flax module.
      variables: its variables (``params`` plus any collections such as ``batch_stats``);
        usually a fresh init. BatchNorm parameters are kept only as ``|scale|``/``|bias|``
        (1 and 0 at init) and their statistics reset to mean 0, variance 1.
      input_shape: the input's shape, batch first (the batch is replaced by 1).
      log: return ``log(score)`` (default) instead of the score.
      call: ``(model, variables, x) -> outputs``; default ``model.apply(v, x, train=False)``.

    Returns:
      the score (a Python float), or its natural log.
    """
    call = call or _default_call
    with jax.enable_x64(True):  # the score is a product over layers: float64 keeps deep nets finite
        variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), dict(variables))
        params = jax.tree_util.tree_map(jnp.abs, variables["params"])
        rest = _identity_norm_stats({k: v for k, v in variables.items() if k != "params"})
        x = jnp.ones((1,) + tuple(input_shape[1:]), jnp.float64)

        def total(p):
            return jnp.sum(call(model, {"params": p, **rest}, x))

        def score(p):
            grads = jax.grad(total)(p)
            terms = jax.tree_util.tree_map(lambda a, g: jnp.sum(jnp.abs(a * g)), p, grads)
            return sum(jax.tree_util.tree_leaves(terms))

        s = float(jax.jit(score)(params))
    if not log:
        return s
    return float(np.log(s)) if s > 0 else float("-inf")
