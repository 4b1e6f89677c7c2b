"""flax modules of the inverted-residual (MBConv) networks: MobileNetV2/V3 and MnasNet.

Every module reads the pure, resolved :class:`~layernas.search_spaces.mbconv.Network` (or
one of its :class:`~layernas.search_spaces.mbconv.MBConvLayer`), the same object the
space's cost model counts, so the cost table describes exactly the model that is trained.
Module names follow the cost model's layer names (``b{block}_{i}`` for layer
``b{block}.{i}``). Layout is NHWC; BatchNorm statistics live in ``batch_stats``.

:func:`build_layerwise` is what :func:`layernas.trainers.models.build_model` calls for a
:class:`~layernas.search_spaces.layerwise.LayerwiseSpace`.

Example:
    >>> from layernas.search_spaces.mobilenet_v3 import mobilenet_v3_small_cifar
    >>> space = mobilenet_v3_small_cifar()
    >>> model = MobileNet(space.resolve(space.default_arch()))
    >>> variables = init_variables(model, (1, 32, 32, 3))
    >>> model.apply(variables, jnp.zeros((1, 32, 32, 3))).shape
    (1, 10)
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from layernas.search_spaces.layerwise import LayerwiseSpace
from layernas.search_spaces.mbconv import MBConvLayer, Network
from layernas.trainers import conv_ops
from layernas.trainers.models import register_model

ACT_FNS: dict[str, Callable] = {
    "identity": lambda x: x,
    "relu": nn.relu,
    "relu6": nn.relu6,
    "hswish": nn.hard_swish,
    "swish": nn.swish,
    "sigmoid": nn.sigmoid,
    "hsigmoid": nn.hard_sigmoid,
}


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm + optional activation.

    A depthwise conv (``groups`` equal to the input and output channels) runs as
    :class:`~layernas.trainers.conv_ops.DepthwiseConv` with ``implementation=depthwise``
    (the same parameter as ``nn.Conv``; "auto" picks the fast one for the backend).
    """

    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: str | None = None
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.groups > 1 and self.groups == self.features == x.shape[-1]:
            x = conv_ops.DepthwiseConv((self.kernel, self.kernel), self.stride, "SAME",
                                       implementation=self.depthwise, name="conv")(x)
        else:
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
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        l, bn = self.layer, dict(bn_eps=self.bn_eps, bn_momentum=self.bn_momentum)
        y = x
        if l.expand:
            y = ConvBN(l.hidden, 1, act=l.act, name="expand", **bn)(y, train)
        y = ConvBN(l.hidden, l.kernel, l.stride, groups=l.hidden, act=l.act, depthwise=self.depthwise, name="dw",
                   **bn)(y, train)
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
    With ``train=True`` pass ``mutable=["batch_stats"]``. ``depthwise`` is how the
    depthwise convs run (see :class:`~layernas.trainers.conv_ops.DepthwiseConv`; every
    choice computes the same function with the same parameters).
    """

    net: Network
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = self.net
        x = Stem(n, name="stem")(x, train)
        for name, layer in zip(n.names, n.layers):
            x = MBConv(layer, n.se_gate, n.se_act, n.bn_eps, n.bn_momentum, self.depthwise,
                       name=name.replace(".", "_"))(x, train)
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


@register_model(LayerwiseSpace)
def build_layerwise(space: LayerwiseSpace, arch: Sequence[int], *, num_classes: int | None = None) -> MobileNet:
    """The :class:`MobileNet` of one architecture of a layerwise space.

    Args:
      space: the layerwise space.
      arch: option indices, one per layer of the space.
      num_classes: the data's class count, when known. The model keeps the space's
        classifier (so its costs are exactly the space's); a dataset with more classes
        than that classifier has outputs cannot be learned and is refused.
    Returns:
      the flax module.
    Raises:
      ValueError: ``num_classes`` exceeds the space's classifier outputs.
    """
    if num_classes is not None and int(num_classes) > space.spec.num_classes:
        raise ValueError(f"the data has {num_classes} classes but space {space.name!r} classifies "
                         f"{space.spec.num_classes}; build the space with num_classes={num_classes}")
    return MobileNet(space.resolve(arch))


def network_from_json(text: str) -> MobileNet:
    """The :class:`MobileNet` of a record written by
    :meth:`~layernas.search_spaces.layerwise.LayerwiseSpace.arch_to_json`."""
    return MobileNet(Network.from_dict(json.loads(text)["network"]))
