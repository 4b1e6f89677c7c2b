"""The NATS topology-space network in PyTorch, for the trainer throughput comparison.

It mirrors :func:`layernas.trainers.nats_models.build_tss` op for op (stem conv + BN,
N cells per stage, two residual reduction blocks, BN + ReLU, global pool, linear), and the
NATS-Bench reference code ("infer.tiny" in XAutoDL): same ops, same channels, same BN
settings (momentum 0.1, eps 1e-5), ``count_include_pad=False`` average pooling. It is used
only by ``benchmarks/trainer_throughput.py``; it is not part of the library.

Example:
    >>> net = TorchTss(["nor_conv_3x3"] * 6, num_classes=10, C=16, N=5)  # doctest: +SKIP
    >>> net(torch.zeros(2, 3, 32, 32)).shape                               # doctest: +SKIP
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), _bn(c_out))


class Zero(nn.Module):
    def __init__(self, c_out: int):
        super().__init__()
        self.c_out = c_out

    def forward(self, x):
        n, _, h, w = x.shape
        return x.new_zeros(n, self.c_out, h, w)


def cell_op(op: str, c_in: int, c_out: int) -> nn.Module:
    if op == "none":
        return Zero(c_out)
    if op == "skip_connect":
        if c_in == c_out:
            return nn.Identity()
        return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out))
    if op == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3)
    if op == "avg_pool_3x3":
        pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        return pool if c_in == c_out else nn.Sequential(ReLUConvBN(c_in, c_out, 1), pool)
    raise ValueError(f"unknown cell op {op!r}")


class Cell(nn.Module):
    def __init__(self, ops: Sequence[str], c: int):
        super().__init__()
        self.edges = nn.ModuleList(cell_op(o, c, c) for o in ops)

    def forward(self, x):
        nodes = [x]
        e = 0
        for i in range(1, 4):
            total = None
            for j in range(i):
                y = self.edges[e](nodes[j])
                total = y if total is None else total + y
                e += 1
            nodes.append(total)
        return nodes[-1]


class Reduction(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.a = ReLUConvBN(c_in, c_out, 3, 2)
        self.b = ReLUConvBN(c_out, c_out, 3, 1)
        self.short = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.short(x) + self.b(self.a(x))


class TorchTss(nn.Module):
    """NATS tss network (NCHW input)."""

    def __init__(self, ops: Sequence[str], num_classes: int, C: int = 16, N: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), _bn(C))
        layers, c_prev = [], C
        for stage, c in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(Reduction(c_prev, c))
            layers += [Cell(ops, c) for _ in range(N)]
            c_prev = c
        self.layers = nn.Sequential(*layers)
        self.last = nn.Sequential(_bn(c_prev), nn.ReLU())
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x):
        x = self.last(self.layers(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3)))
