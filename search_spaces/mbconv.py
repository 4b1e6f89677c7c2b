"""The inverted-residual (MBConv) network that the MobileNetV2/V3 and MnasNet spaces share.

A :class:`Network` is a *resolved* architecture: plain channel counts, kernels, strides
and activations for every layer, with nothing left to choose. Two pure functions read it:

* :func:`network_cost` -> a :class:`layernas.cost_model.NetworkCost` (per-layer MAdds and
  params, torchvision's counting: BN scale/offset are params, convs have no bias except
  inside SE, the classifier has a bias);
* :class:`MobileNet` -> the flax module (BatchNorm with a ``train`` flag).

Because both read the same :class:`Network`, the cost table describes exactly the model
that is trained. Layer names are shared by the two (``b{block}.{i}.dw`` and so on).

An MBConv layer is: 1x1 expand conv + BN + act (only when ``hidden != in_ch``), kxk
depthwise conv + BN + act, optional squeeze-and-excite on the expanded features, 1x1
project conv + BN (linear), and a residual add when ``stride == 1 and in_ch == out_ch``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from layernas.cost_model import CostBuilder, NetworkCost

ACT_FNS: dict[str, Callable] = {
    "identity": lambda x: x,
    "relu": nn.relu,
    "relu6": nn.relu6,
    "hswish": nn.hard_swish,
    "swish": nn.swish,
    "sigmoid": nn.sigmoid,
    "hsigmoid": nn.hard_sigmoid,
}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (the rule of the TF/torchvision
    MobileNets): nearest multiple, at least ``min_value`` (default ``divisor``), and never
    more than 10% below ``value``."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


@dataclasses.dataclass(frozen=True)
class MBConvLayer:
    """One resolved inverted-residual layer.

    Attributes:
      in_ch, hidden, out_ch: input, expanded and output channels.
      kernel, stride: of the depthwise conv.
      se_ch: squeeze channels of squeeze-and-excite; 0 means no SE.
      act: activation after the expand and depthwise convs.
    """

    in_ch: int
    hidden: int
    out_ch: int
    kernel: int = 3
    stride: int = 1
    se_ch: int = 0
    act: str = "relu6"

    @property
    def expand(self) -> bool:
        return self.hidden != self.in_ch

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


@dataclasses.dataclass(frozen=True)
class Network:
    """A resolved MBConv classifier.

    Attributes:
      resolution: input height = width.
      stem_ch, stem_kernel, stem_stride, stem_act: the first conv + BN + act.
      layers: the MBConv layers in order.
      names: one name per layer (``"b{block}.{i}"``).
      head_ch, head_act: the final 1x1 conv + BN + act (head_ch 0: none).
      fc: widths of hidden FC layers after pooling (MobileNetV3: ``(1280,)``), each
        followed by ``fc_act`` (no BN).
      num_classes: classifier outputs.
      se_gate: the SE gating function (``"hsigmoid"`` in V3, ``"sigmoid"`` in MnasNet).
      se_act: the activation between the two SE FCs.
      bn_eps, bn_momentum: BatchNorm settings (flax momentum, i.e. 1 - torch momentum).
      in_channels: image channels.
    """

    resolution: int
    stem_ch: int
    layers: tuple[MBConvLayer, ...]
    names: tuple[str, ...]
    head_ch: int
    num_classes: int
    stem_kernel: int = 3
    stem_stride: int = 2
    stem_act: str = "relu6"
    head_act: str = "relu6"
    fc: tuple[int, ...] = ()
    fc_act: str = "hswish"
    se_gate: str = "hsigmoid"
    se_act: str = "relu"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9
    in_channels: int = 3

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = [dataclasses.asdict(l) for l in self.layers]
        d["names"] = list(self.names)
        d["fc"] = list(self.fc)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Network":
        d = dict(d)
        d["layers"] = tuple(MBConvLayer(**l) for l in d["layers"])
        d["names"] = tuple(d["names"])
        d["fc"] = tuple(d.get("fc", ()))
        return cls(**d)


# --- cost -----------------------------------------------------------------------------
def stem_cost(b: CostBuilder, net: Network) -> CostBuilder:
    return (
        b.conv2d("stem.conv", net.stem_ch, net.stem_kernel, net.stem_stride)
        .batch_norm("stem.bn")
        .activation("stem.act", net.stem_act)
    )


def mbconv_cost(b: CostBuilder, name: str, layer: MBConvLayer) -> CostBuilder:
    """Append the costs of one MBConv layer to ``b`` (whose shape is the layer input)."""
    if b.shape[-1] != layer.in_ch:
        raise ValueError(f"layer {name!r}: input has {b.shape[-1]} channels, config says {layer.in_ch}")
    if layer.expand:
        b.pointwise_conv2d(f"{name}.expand", layer.hidden).batch_norm(f"{name}.expand_bn")
        b.activation(f"{name}.expand_act", layer.act)
    b.depthwise_conv2d(f"{name}.dw", layer.kernel, layer.stride).batch_norm(f"{name}.dw_bn")
    b.activation(f"{name}.dw_act", layer.act)
    if layer.se_ch:
        b.squeeze_excite(f"{name}.se", layer.se_ch)
    b.pointwise_conv2d(f"{name}.project", layer.out_ch).batch_norm(f"{name}.project_bn")
    if layer.residual:
        b.residual_add(f"{name}.add")
    return b


def head_cost(b: CostBuilder, net: Network) -> CostBuilder:
    if net.head_ch:
        b.pointwise_conv2d("head.conv", net.head_ch).batch_norm("head.bn").activation("head.act", net.head_act)
    b.global_pool("pool")
    for i, width in enumerate(net.fc):
        b.dense(f"fc{i}", width).activation(f"fc{i}_act", net.fc_act)
    return b.dense("classifier", net.num_classes)


def network_cost(net: Network) -> NetworkCost:
    """Per-layer MAdds and params of the whole network (see the module docstring)."""
    b = stem_cost(CostBuilder((net.resolution, net.resolution, net.in_channels)), net)
    for name, layer in zip(net.names, net.layers):
        mbconv_cost(b, name, layer)
    return head_cost(b, net).result()


# --- flax -----------------------------------------------------------------------------
class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm + optional activation."""

    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: str | None = None
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(
            self.features, (self.kernel, self.kernel), (self.stride, self.stride), padding="SAME",
            feature_group_count=self.groups, use_bias=False, name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_eps, name="bn")(x)
        return ACT_FNS[self.act](x) if self.act else x


class SqueezeExcite(nn.Module):
    squeeze: int
    act: str = "relu"
    gate: str = "hsigmoid"

    @nn.compact
    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = ACT_FNS[self.act](nn.Conv(self.squeeze, (1, 1), name="fc1")(s))
        s = ACT_FNS[self.gate](nn.Conv(x.shape[-1], (1, 1), name="fc2")(s))
        return x * s


class MBConv(nn.Module):
    """One inverted-residual layer (see the module docstring)."""

    layer: MBConvLayer
    se_gate: str = "hsigmoid"
    se_act: str = "relu"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool = False):
        l, bn = self.layer, dict(bn_eps=self.bn_eps, bn_momentum=self.bn_momentum)
        y = x
        if l.expand:
            y = ConvBN(l.hidden, 1, act=l.act, name="expand", **bn)(y, train)
        y = ConvBN(l.hidden, l.kernel, l.stride, groups=l.hidden, act=l.act, name="dw", **bn)(y, train)
        if l.se_ch:
            y = SqueezeExcite(l.se_ch, self.se_act, self.se_gate, name="se")(y)
        y = ConvBN(l.out_ch, 1, act=None, name="project", **bn)(y, train)
        return x + y if l.residual else y


class Stem(nn.Module):
    net: Network

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = self.net
        return ConvBN(n.stem_ch, n.stem_kernel, n.stem_stride, act=n.stem_act, bn_eps=n.bn_eps,
                      bn_momentum=n.bn_momentum, name="stem")(x, train)


class Head(nn.Module):
    net: Network

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = self.net
        if n.head_ch:
            x = ConvBN(n.head_ch, 1, act=n.head_act, bn_eps=n.bn_eps, bn_momentum=n.bn_momentum, name="head")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        for i, width in enumerate(n.fc):
            x = ACT_FNS[n.fc_act](nn.Dense(width, name=f"fc{i}")(x))
        return nn.Dense(n.num_classes, name="classifier")(x)


class MobileNet(nn.Module):
    """The flax classifier for a resolved :class:`Network`.

    Call as ``model.apply(variables, images, train=False)`` with NHWC images of shape
    ``(B, resolution, resolution, in_channels)``; returns logits ``(B, num_classes)``.
    With ``train=True`` pass ``mutable=["batch_stats"]``.
    """

    net: Network

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = self.net
        x = Stem(n, name="stem")(x, train)
        for name, layer in zip(n.names, n.layers):
            x = MBConv(layer, n.se_gate, n.se_act, n.bn_eps, n.bn_momentum, name=name.replace(".", "_"))(x, train)
        return Head(n, name="head")(x, train)


def count_params(variables) -> int:
    """Number of trainable parameters in a flax variables dict (``params`` only)."""
    return int(sum(p.size for p in jax.tree_util.tree_leaves(variables["params"])))


def init_variables(module: nn.Module, input_shape: tuple[int, ...], seed: int = 0, scale: float = 0.1):
    """Variables for ``module`` without running flax's RNG-heavy ``init``.

    The shapes come from ``jax.eval_shape`` (tracing only); kernels are filled with
    ``scale``-normal numpy draws, BN scales and variances with 1, the rest with 0. Meant
    for timing and shape checks, not for training (use ``module.init`` there).
    """
    import numpy as np

    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(input_shape), train=False))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(path[-1].key) if hasattr(path[-1], "key") else str(path[-1])
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean"):
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(0.0, scale, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
