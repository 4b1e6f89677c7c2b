"""Data-parallel training of one child over several devices.

:func:`train_data_parallel` trains one child over all local devices: the state is
replicated and each batch is split along the mesh axis ``"data"``
(:func:`~layernas.executors.devices.data_parallel_mesh`) with a ``NamedSharding``;
``jax.jit`` inserts the gradient all-reduce. BatchNorm statistics are computed over the
global batch, so the result equals single-device training up to float reduction order.
(``jax.pmap`` is in maintenance mode since JAX 0.8 and ``jax.device_put_replicated`` is
gone in 0.10, so neither is used.)

The executors that spread *trials* over devices and hosts (candidate-parallel,
multi-host, Ray) live in :mod:`layernas.executors`.

Example (data-parallel over 4 CPU devices;
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before JAX starts):
    >>> mesh = data_parallel_mesh()                                               # doctest: +SKIP
    >>> result = train.train_model(model, tr, va, recipe, seed=0, placement=mesh)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import jax

from layernas.executors.devices import data_parallel_mesh
from layernas.trainers import train as train_lib


def train_data_parallel(model, train, valid, recipe: train_lib.Recipe, seed: int,
                        devices: Sequence[jax.Device] | None = None, **kw) -> train_lib.TrainResult:
    """:func:`~layernas.trainers.train.train_model` of one child over all ``devices``.

    ``recipe.batch_size`` is the global batch and must be divisible by the device count.
    """
    return train_lib.train_model(model, train, valid, recipe, seed, placement=data_parallel_mesh(devices), **kw)


__all__ = ["data_parallel_mesh", "train_data_parallel"]
