"""FLOPs and params of the NATS-Bench macro network, counted the way NATS-Bench counts.

Both NATS-Bench spaces train one macro network (XAutoDL's ``TinyNetwork`` for the
topology space, ``DynamicShapeTinyNet`` for the size space; the first is the second with
channels ``[C]*N + [2C] + [2C]*N + [4C] + [4C]*N``):

* stem: ``Conv2d(3, c0, 3, padding=1, bias=False)`` + BatchNorm;
* ``len(channels)`` layers; layers ``N`` and ``2N+1`` (``N = len(channels) // 3``) are
  residual reduction blocks ``ResNetBasicblock(c_prev, c, stride=2)``: two
  ReLU-Conv3x3-BN (the first with stride 2) and a shortcut AvgPool2d(2) + Conv1x1 (no BN);
  every other layer is a cell (``InferCell(genotype, c_prev, c)``, 4 nodes, 6 edges);
* BatchNorm + ReLU, global average pooling, ``Linear(c_last, num_classes)``.

Cell edges ``j <- i`` read node ``i``; edges from node 0 map ``c_in -> c_out`` and the
others ``c_out -> c_out``. Ops: ``none`` (zero, no weights); ``skip_connect`` (identity,
or a stride-1 FactorizedReduce = Conv1x1 + BN when ``c_in != c_out``);
``nor_conv_1x1`` / ``nor_conv_3x3`` (ReLU-Conv-BN); ``avg_pool_3x3`` (pooling, preceded by
ReLU-Conv1x1-BN when ``c_in != c_out``).

Counting convention (XAutoDL ``get_model_infos``): FLOPs count Conv2d and Linear only,
``k*k*Cin*Cout*Hout*Wout`` (+ ``Cout*Hout*Wout`` for a bias; NATS convs have none) and
``Cin*Cout + Cout`` for the classifier, reported in MFLOPs (= 1e6 multiply-adds). Params are
every trainable parameter (conv and linear weights, linear bias, BatchNorm affine weight
and bias) in MB (= 1e6 parameters). Every edge counts, even one that cannot reach the
output node. Pooling, activations and additions are not counted.

All functions accept numpy arrays for the channel counts (broadcasting), so the size
space can cost all of its architectures at once.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of the 6 cell edges, in the order of the official arch string
# |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
# dataset -> (input resolution, number of classes)
DATASETS = {"cifar10": (32, 10), "cifar100": (32, 100), "ImageNet16-120": (16, 120)}


def check_dataset(dataset: str, error: type[Exception]) -> tuple[int, int]:
    """``(resolution, num_classes)`` of a NATS dataset, or ``error`` naming the bad name."""
    if dataset not in DATASETS:
        raise error(
            f"unknown NATS-Bench dataset {dataset!r}; expected one of {', '.join(DATASETS)}"
        )
    return DATASETS[dataset]


def _conv(k, cin, cout, hw):
    """(flops, params) of a bias-free k x k conv followed by BatchNorm (2*cout params)."""
    return k * k * cin * cout * hw, k * k * cin * cout + 2 * cout


def edge_costs(op: str, cin, cout, hw):
    """(flops, params) of one stride-1 cell edge (multiply-adds, parameter count)."""
    zero = 0 * (cin * cout)
    if op == "none":
        return zero, zero
    if op == "nor_conv_3x3":
        return _conv(3, cin, cout, hw)
    if op == "nor_conv_1x1":
        return _conv(1, cin, cout, hw)
    if op in ("skip_connect", "avg_pool_3x3"):
        # identity / plain pooling when the widths agree, else a Conv1x1 + BN adapter
        same = np.equal(cin, cout)
        f, p = _conv(1, cin, cout, hw)
        return np.where(same, 0, f), np.where(same, 0, p)
    raise ValueError(f"unknown NATS cell op {op!r}; expected one of {', '.join(OPS)}")


def network_costs(
    channels: Sequence, cell_ops: Sequence[str], dataset: str
) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs (MFLOPs) and params (MB) of the NATS macro network.

    Args:
      channels: output width of every layer (``len % 3 == 2``); ints or numpy arrays that
        broadcast against each other.
      cell_ops: the 6 edge ops of the cell, in EDGES order.
      dataset: ``cifar10``, ``cifar100`` or ``ImageNet16-120`` (sets the input size and the
        number of classes).
    Returns:
      ``(mflops, params_mb)``, numpy float arrays (0-d for scalar channels).
    """
    resolution, num_classes = check_dataset(dataset, ValueError)
    if len(channels) % 3 != 2:
        raise ValueError(f"{len(channels)} layers: the NATS network needs 3N+2")
    if len(cell_ops) != len(EDGES):
        raise ValueError(f"a NATS cell has {len(EDGES)} edges, got {len(cell_ops)} ops")
    n = len(channels) // 3
    reductions = {n, 2 * n + 1}
    channels = [np.asarray(c, dtype=np.int64) for c in channels]
    hw = resolution * resolution
    flops, params = _conv(3, 3, channels[0], hw)  # stem
    c_prev = channels[0]
    for layer, c in enumerate(channels):
        if layer in reductions:
            hw //= 4
            for f, p in (
                _conv(3, c_prev, c, hw),  # conv_a, stride 2
                _conv(3, c, c, hw),  # conv_b
                (c_prev * c * hw, c_prev * c),  # shortcut conv1x1 (after AvgPool2d), no BN
            ):
                flops, params = flops + f, params + p
        else:
            for (_, src), op in zip(EDGES, cell_ops):
                f, p = edge_costs(op, c_prev if src == 0 else c, c, hw)
                flops, params = flops + f, params + p
        c_prev = c
    params = params + 2 * c_prev  # last BatchNorm
    flops = flops + c_prev * num_classes + num_classes  # classifier (with bias)
    params = params + c_prev * num_classes + num_classes
    return np.asarray(flops, dtype=np.float64) / 1e6, np.asarray(params, dtype=np.float64) / 1e6
