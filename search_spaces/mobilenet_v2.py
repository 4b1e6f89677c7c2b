"""MobileNetV2 search spaces (Sandler et al. 2018), 1.0 and 1.4 width, ImageNet and CIFAR.

The base network follows torchvision's ``mobilenet_v2`` exactly (channel rounding with
``make_divisible(c * width, 8)``, stem 32, head ``1280 * max(1, width)``, ReLU6, BN
everywhere, no conv biases), so the all-default architecture of :func:`mobilenet_v2`
has 300.8M MAdds and 3,504,872 params at 224x224 (width 1.4: 582M, 6.1M).

Searched per block (see :mod:`layernas.search_spaces.layerwise`): depth (base-1, base,
base+1), depthwise kernel {3, 5, 7}, expansion multiplier {0.5, 0.75, 1} of the base
ratio 6 (the first block, base ratio 1, searches {1, 3, 6}), output filters multiplier
{0.5, 0.75, 1, 1.25}. MobileNetV2 has no SE and one activation, so those are fixed.

Example:
    >>> space = mobilenet_v2()
    >>> c = space.cost(space.default_arch())
    >>> round(c["madds"] / 1e6, 1), int(c["params"])
    (300.8, 3504872)
"""

from __future__ import annotations

import dataclasses

from layernas.search_spaces.layerwise import BackboneSpec, BlockSpec, LayerwiseSpace
from layernas.search_spaces.mbconv import make_divisible

# (expansion t, channels c, repeats n, stride s) of the paper's Table 2.
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2_spec(width: float = 1.0, resolution: int = 224, num_classes: int = 1000, cifar: bool = False,
                      **block_options) -> BackboneSpec:
    """The MobileNetV2 backbone spec.

    Args:
      width: the width multiplier (1.0 or 1.4 in the paper).
      resolution: input size.
      num_classes: classifier outputs.
      cifar: the CIFAR variant: stem stride 1 and the first stride-2 block (24 filters)
        at stride 1, so a 32x32 input ends at 4x4 (ImageNet's 224 ends at 7x7).
      **block_options: overrides of :class:`BlockSpec` option fields for every block
        (for example ``filter_options=(1.0,)`` to stop searching filters).
    Returns:
      the :class:`BackboneSpec`.
    """
    blocks = []
    for i, (t, c, n, s) in enumerate(V2_SETTINGS):
        if cifar and i == 1:
            s = 1
        opts = dict(expansion_options=(1.0, 3.0, 6.0) if t == 1 else (0.5, 0.75, 1.0), act="relu6")
        opts.update(block_options)
        blocks.append(BlockSpec(filters=make_divisible(c * width, 8), depth=n, stride=s, kernel=3,
                                expansion=(float(t),), **opts))
    name = "mobilenetv2" + ("" if width == 1.0 else f"-{width:g}") + ("-cifar" if cifar else "")
    return BackboneSpec(
        name=name, resolution=resolution, num_classes=num_classes,
        stem_channels=make_divisible(32 * width, 8), stem_stride=1 if cifar else 2, stem_act="relu6",
        blocks=tuple(blocks), head_channels=make_divisible(1280 * max(1.0, width), 8), head_act="relu6",
        bn_eps=1e-5, bn_momentum=0.9,
    )


def mobilenet_v2(width: float = 1.0, resolution: int = 224, num_classes: int = 1000, latency_lut=None,
                 **block_options) -> LayerwiseSpace:
    """The MobileNetV2 ImageNet space (registry name ``mobilenetv2``)."""
    return LayerwiseSpace(mobilenet_v2_spec(width, resolution, num_classes, False, **block_options), latency_lut)


def mobilenet_v2_140(resolution: int = 224, num_classes: int = 1000, latency_lut=None, **block_options) -> LayerwiseSpace:
    """MobileNetV2 1.4x (registry name ``mobilenetv2-1.4``)."""
    return mobilenet_v2(1.4, resolution, num_classes, latency_lut, **block_options)


def mobilenet_v2_cifar(width: float = 1.0, resolution: int = 32, num_classes: int = 10, latency_lut=None,
                       **block_options) -> LayerwiseSpace:
    """The CIFAR-size MobileNetV2 space (registry name ``mobilenetv2-cifar``)."""
    return LayerwiseSpace(mobilenet_v2_spec(width, resolution, num_classes, True, **block_options), latency_lut)


def mobilenet_v2_140_cifar(resolution: int = 32, num_classes: int = 10, latency_lut=None, **block_options):
    """CIFAR-size MobileNetV2 1.4x (registry name ``mobilenetv2-1.4-cifar``)."""
    return mobilenet_v2_cifar(1.4, resolution, num_classes, latency_lut, **block_options)


SPACES = {
    "mobilenetv2": mobilenet_v2,
    "mobilenetv2-1.4": mobilenet_v2_140,
    "mobilenetv2-cifar": mobilenet_v2_cifar,
    "mobilenetv2-1.4-cifar": mobilenet_v2_140_cifar,
}
