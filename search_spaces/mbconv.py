"""The inverted-residual (MBConv) network that the MobileNetV2/V3 and MnasNet spaces share.

A :class:`Network` is a *resolved* architecture: plain channel counts, kernels, strides
and activations for every layer, with nothing left to choose. Two pure readers use it:

* :func:`network_cost` (here) -> a :class:`layernas.cost_model.NetworkCost` (per-layer
  MAdds and params, torchvision's counting: BN scale/offset are params, convs have no bias
  except inside SE, the classifier has a bias);
* :class:`layernas.trainers.mbconv_model.MobileNet` -> the flax module (BatchNorm with a
  ``train`` flag). This module imports no jax or flax.

Because both read the same :class:`Network`, the cost table describes exactly the model
that is trained. Layer names are shared by the two (``b{block}.{i}.dw`` and so on).

An MBConv layer is: 1x1 expand conv + BN + act (only when ``hidden != in_ch``), kxk
depthwise conv + BN + act, optional squeeze-and-excite on the expanded features, 1x1
project conv + BN (linear), and a residual add when ``stride == 1 and in_ch == out_ch``.

Example:
    >>> net = Network(resolution=32, stem_ch=8, layers=(MBConvLayer(8, 16, 8),), names=("b0.0",),
    ...               head_ch=0, num_classes=10)
    >>> cost = network_cost(net)
    >>> cost.madds > 0 and cost.params > 0
    True
"""

from __future__ import annotations

import dataclasses

from layernas.cost_model import CostBuilder, NetworkCost


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
