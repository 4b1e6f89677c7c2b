"""flax.linen models for the NATS-Bench macro skeleton (topology space tss, size space sss).

The skeleton (NAS-Bench-201 / NATS-Bench, "infer.tiny" and "infer.shape.tiny"):

* stem: 3x3 conv (no bias) + BatchNorm;
* three stages of N cells, separated by two residual reduction blocks
  (ReLU-Conv3x3(stride 2)-BN, ReLU-Conv3x3-BN; shortcut 2x2 average pool + 1x1 conv);
* BatchNorm + ReLU, global average pool, a linear classifier.

A cell is a 4-node DAG with 6 edges; node i sums ``op(node j)`` over j < i and the cell
outputs node 3. The 6 edges are ordered as in the NATS arch string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2).
Ops: ``none`` (zeros), ``skip_connect`` (identity; a 1x1 conv + BN where the channel
count changes, as NATS's FactorizedReduce at stride 1), ``nor_conv_1x1`` and
``nor_conv_3x3`` (ReLU-Conv-BN), ``avg_pool_3x3`` (3x3 average pool, padding not counted;
preceded by ReLU-Conv1x1-BN where the channel count changes).

tss: channels C, 2C, 4C per stage (C=16, N=5 in NATS); the cell's 6 ops are searched.
sss: N=1, the cell is fixed to :data:`SSS_CELL_OPS`, and the 5 layer channel counts
(stem/cell, reduction, cell, reduction, cell) are searched.

Layout is NHWC. Every module takes ``(x, train: bool)`` and keeps BatchNorm statistics in
the ``batch_stats`` collection (PyTorch momentum 0.1 = flax momentum 0.9, eps 1e-5).

Example:
    >>> import jax, jax.numpy as jnp
    >>> model = build_tss(["nor_conv_3x3"] * 6, num_classes=10, C=4, N=1)
    >>> v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    >>> sorted(v)
    ['batch_stats', 'params']
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from layernas.search_spaces.nats_network import DATASETS
from layernas.search_spaces.nats_sss import NatsSss
from layernas.search_spaces.nats_tss import NatsTss
from layernas.trainers.models import register_model

TSS_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
TSS_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
# The sss cell: NATS-Bench's fixed genotype
# |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|
SSS_CELL_OPS = ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_3x3")
SSS_CHANNELS = (8, 16, 24, 32, 40, 48, 56, 64)

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _bn(train: bool, name: str | None = None) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ReLUConvBN(nn.Module):
    """ReLU, conv (no bias, 'same' padding), BatchNorm."""

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(x)
        p = self.kernel // 2
        x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                    padding=((p, p), (p, p)), use_bias=False, kernel_init=_conv_init)(x)
        return _bn(train)(x)


class CellOp(nn.Module):
    """One edge operation of a NATS cell (stride 1)."""

    op: str
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        c_in = x.shape[-1]
        if self.op == "none":
            return jnp.zeros(x.shape[:-1] + (self.features,), x.dtype)
        if self.op == "skip_connect":
            if c_in == self.features:
                return x
            x = nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=_conv_init)(x)
            return _bn(train)(x)
        if self.op == "nor_conv_1x1":
            return ReLUConvBN(self.features, 1)(x, train)
        if self.op == "nor_conv_3x3":
            return ReLUConvBN(self.features, 3)(x, train)
        if self.op == "avg_pool_3x3":
            if c_in != self.features:
                x = ReLUConvBN(self.features, 1)(x, train)
            return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)
        raise ValueError(f"unknown cell op {self.op!r}; expected one of {TSS_OPS}")


class Cell(nn.Module):
    """The 4-node NATS cell. ``ops`` are the 6 edge ops in :data:`TSS_EDGES` order."""

    ops: tuple[str, ...]
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        # A node whose every input edge is "none" is zero whatever the input; so are the skip
        # and average-pool edges out of it. They are left out (None below) rather than
        # computed: XLA would constant-fold a pool over a zero tensor the size of the batch,
        # which takes minutes to compile. The outputs and the parameters are unchanged.
        nodes = [x]
        edge = 0
        for i in range(1, 4):
            total = None
            for j in range(i):
                op = self.ops[edge]
                # (a zero node is an edge output: it has self.features channels, so a skip
                # or a pool out of it has no parameters)
                zero_out = op == "none" or (nodes[j] is None and op in ("skip_connect", "avg_pool_3x3"))
                if not zero_out:
                    src = nodes[j] if nodes[j] is not None else jnp.zeros(x.shape[:-1] + (self.features,), x.dtype)
                    y = CellOp(op, self.features, name=f"edge_{i}_{j}")(src, train)
                    total = y if total is None else total + y
                edge += 1
            nodes.append(total)
        if nodes[-1] is None:
            return jnp.zeros(x.shape[:-1] + (self.features,), x.dtype)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NATS's ResNetBasicblock at stride 2: halves the resolution, sets the channels."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = ReLUConvBN(self.features, 3, 2)(x, train)
        y = ReLUConvBN(self.features, 3, 1)(y, train)
        r = nn.avg_pool(x, (2, 2), (2, 2))
        r = nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=_conv_init)(r)
        return r + y


class NatsNetwork(nn.Module):
    """The NATS macro skeleton with explicit per-layer channels.

    Attributes:
      stem_features: channels of the stem conv.
      layer_features: channels of every layer (cells and reduction blocks), in order.
      layer_reductions: True where the layer is a residual reduction block.
      cell_ops: the 6 edge ops shared by every cell.
      num_classes: classifier outputs.
    """

    stem_features: int
    layer_features: tuple[int, ...]
    layer_reductions: tuple[bool, ...]
    cell_ops: tuple[str, ...]
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.stem_features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=_conv_init, name="stem_conv")(x)
        x = _bn(train, "stem_bn")(x)
        for i, (c, red) in enumerate(zip(self.layer_features, self.layer_reductions)):
            if red:
                x = ResidualReduction(c, name=f"layer_{i}_reduce")(x, train)
            else:
                x = Cell(self.cell_ops, c, name=f"layer_{i}_cell")(x, train)
        x = nn.relu(_bn(train, "last_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(x)


def _check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(str(o) for o in ops)
    if len(ops) != 6:
        raise ValueError(f"cell ops {ops} has {len(ops)} entries; expected 6 (one per edge)")
    for o in ops:
        if o not in TSS_OPS:
            raise ValueError(f"unknown cell op {o!r}; expected one of {TSS_OPS}")
    return ops


def _check_classes(num_classes: int) -> int:
    if int(num_classes) < 1:
        raise ValueError(f"num_classes={num_classes}; expected a positive integer")
    return int(num_classes)


def build_tss(ops: Sequence[str], num_classes: int, C: int = 16, N: int = 5) -> NatsNetwork:
    """The NATS topology-space network ("infer.tiny").

    Args:
      ops: the 6 edge ops, in :data:`TSS_EDGES` order (names from :data:`TSS_OPS`).
      num_classes: classifier outputs.
      C: channels of the first stage (2C, 4C after the reductions). NATS: 16.
      N: cells per stage. NATS: 5.

    Returns:
      a flax module called as ``model.apply(variables, x, train)``, x NHWC float.
    """
    ops = _check_ops(ops)
    if C < 1 or N < 0:
        raise ValueError(f"C={C}, N={N}; expected C >= 1 and N >= 0")
    feats = (C,) * N + (2 * C,) + (2 * C,) * N + (4 * C,) + (4 * C,) * N
    reds = (False,) * N + (True,) + (False,) * N + (True,) + (False,) * N
    return NatsNetwork(C, feats, reds, ops, _check_classes(num_classes))


def build_sss(channels: Sequence[int], num_classes: int,
              cell_ops: Sequence[str] = SSS_CELL_OPS) -> NatsNetwork:
    """The NATS size-space network ("infer.shape.tiny").

    Args:
      channels: the 5 layer widths (cell, reduction, cell, reduction, cell), e.g.
        ``(8, 8, 40, 32, 40)`` for the NATS string ``8:8:40:32:40``. NATS uses values from
        :data:`SSS_CHANNELS`, but any positive widths build.
      num_classes: classifier outputs.
      cell_ops: the fixed cell; NATS's is :data:`SSS_CELL_OPS`.

    Returns:
      a flax module called as ``model.apply(variables, x, train)``.
    """
    channels = tuple(int(c) for c in channels)
    if len(channels) != 5 or min(channels) < 1:
        raise ValueError(f"channels {channels}; expected 5 positive widths, e.g. (8, 8, 40, 32, 40)")
    reds = (False, True, False, True, False)
    return NatsNetwork(channels[0], channels, reds, _check_ops(cell_ops), _check_classes(num_classes))


def _option_values(space, arch: Sequence[int]) -> list:
    arch = tuple(int(a) for a in arch)
    if len(arch) != len(space.layers):
        raise ValueError(f"architecture {arch} has {len(arch)} layers; space has {len(space.layers)}")
    return [layer.options[a] for layer, a in zip(space.layers, arch)]


@register_model(NatsTss)
def build_tss_space(space: NatsTss, arch: Sequence[int], *, num_classes: int | None = None,
                    C: int = 16, N: int = 5) -> NatsNetwork:
    """The network of a topology-space architecture (its options are the 6 edge ops).

    Args:
      space: the topology space.
      arch: option indices, one per edge in :data:`TSS_EDGES` order.
      num_classes: classifier outputs (None: the space's dataset's class count).
      C, N: width and cells per stage (NATS: 16, 5).
    """
    classes = DATASETS[space.dataset][1] if num_classes is None else num_classes
    return build_tss(_option_values(space, arch), classes, C=C, N=N)


@register_model(NatsSss)
def build_sss_space(space: NatsSss, arch: Sequence[int], *, num_classes: int | None = None,
                    C: int = 16, N: int = 5) -> NatsNetwork:
    """The network of a size-space architecture (its options are the 5 widths).

    Args:
      space: the size space.
      arch: option indices, one per layer.
      num_classes: classifier outputs (None: the space's dataset's class count).
      C, N: accepted for a uniform call with :func:`build_tss_space` and ignored: the size
        space's widths are the architecture, and it has one cell per stage.
    """
    classes = DATASETS[space.dataset][1] if num_classes is None else num_classes
    return build_sss(_option_values(space, arch), classes)


def build_for_nats_space(space, arch: Sequence[int], num_classes: int, C: int = 16, N: int = 5) -> NatsNetwork:
    """Build a NATS space's architecture from its layers' option values.

    For a :class:`~layernas.search_spaces.nats_tss.NatsTss` the options are op names (6
    layers, one per edge in :data:`TSS_EDGES` order); for a
    :class:`~layernas.search_spaces.nats_sss.NatsSss` they are widths (5 layers). Same as
    ``layernas.trainers.models.build_model(space, arch, num_classes=..., C=C, N=N)``,
    restricted to NATS spaces.

    Args:
      space: the NATS search space.
      arch: option indices, one per layer.
      num_classes: classifier outputs.
      C, N: tss width and cells per stage (ignored for sss).
    Raises:
      ValueError: ``space`` is not a NATS space.
    """
    if isinstance(space, NatsTss):
        return build_tss_space(space, arch, num_classes=num_classes, C=C, N=N)
    if isinstance(space, NatsSss):
        return build_sss_space(space, arch, num_classes=num_classes)
    raise ValueError(f"space {getattr(space, 'name', space)!r} is not a NATS space; expected a NatsTss or NatsSss")
