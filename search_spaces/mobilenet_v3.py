"""MobileNetV3 search spaces (Howard et al. 2019), Large and Small, ImageNet and CIFAR.

The base networks follow torchvision's ``mobilenet_v3_large`` / ``_small`` exactly:
expanded widths, SE squeeze ``make_divisible(expanded / 4, 8)`` with hard-sigmoid
gating and SE conv biases, hard-swish stem, last 1x1 conv (960 / 576) + hard-swish, then
an FC (1280 / 1024) + hard-swish and the classifier. The all-default architectures have
216.6M MAdds / 5,483,032 params (Large) and 56.5M / 2,542,856 (Small) at 224x224.

Blocks group the consecutive layers with the same output filters. Searched per block:
depth (base-1, base, base+1), kernel {3, 5, 7}, expansion multiplier {0.5, 0.75, 1} of
the base per-layer ratios (blocks whose base ratio is 1, i.e. no expand conv, search
{1, 3, 6}), filters multiplier {0.5, 0.75, 1, 1.25}, SE {off, on} and activation
{relu, hswish}.

Example:
    >>> space = mobilenet_v3_large()
    >>> c = space.cost(space.default_arch())
    >>> round(c["madds"] / 1e6, 1), int(c["params"])
    (216.6, 5483032)
"""

from __future__ import annotations

from layernas.search_spaces.layerwise import BackboneSpec, BlockSpec, LayerwiseSpace
from layernas.search_spaces.mbconv import make_divisible

# (filters, depth, stride, kernel, per-layer expanded channels, se, act), torchvision's table.
V3_LARGE = (
    (16, 1, 1, 3, (16,), False, "relu"),
    (24, 2, 2, 3, (64, 72), False, "relu"),
    (40, 3, 2, 5, (72, 120, 120), True, "relu"),
    (80, 4, 2, 3, (240, 200, 184, 184), False, "hswish"),
    (112, 2, 1, 3, (480, 672), True, "hswish"),
    (160, 3, 2, 5, (672, 960, 960), True, "hswish"),
)
V3_SMALL = (
    (16, 1, 2, 3, (16,), True, "relu"),
    (24, 2, 2, 3, (72, 88), False, "relu"),
    (40, 3, 2, 5, (96, 240, 240), True, "hswish"),
    (48, 2, 1, 5, (120, 144), True, "hswish"),
    (96, 3, 2, 5, (288, 576, 576), True, "hswish"),
)
# (stem, last conv, FC) widths.
V3_HEADS = {"large": (16, 960, 1280), "small": (16, 576, 1024)}


def mobilenet_v3_spec(size: str = "large", resolution: int = 224, num_classes: int = 1000, cifar: bool = False,
                      width: float = 1.0, **block_options) -> BackboneSpec:
    """The MobileNetV3 backbone spec.

    Args:
      size: ``"large"`` or ``"small"``.
      resolution: input size.
      num_classes: classifier outputs.
      cifar: the CIFAR variant: stem stride 1 and the first stride-2 block at stride 1,
        so a 32x32 input ends at 4x4.
      width: the width multiplier, as torchvision's ``width_mult``: every block's input,
        expanded and output channels, the stem and the FC become ``make_divisible(c *
        width, 8)``, and the last conv is 6 times the last block's output channels.
      **block_options: overrides of :class:`BlockSpec` option fields for every block.

    Example:
        >>> spec = mobilenet_v3_spec("small", 32, 10, cifar=True, width=0.5)
        >>> spec.stem_channels, spec.blocks[0].filters, spec.head_channels, spec.fc_channels
        (8, 8, 288, (512,))
    """
    if size not in V3_HEADS:
        raise ValueError(f"MobileNetV3 size {size!r} is not 'large' or 'small'")
    if not (isinstance(width, (int, float)) and not isinstance(width, bool) and width > 0):
        raise ValueError(f"MobileNetV3 width {width!r} is not a positive number")

    def scaled(c: int) -> int:   # torchvision's table is in multiples of 8: width 1 keeps it
        return make_divisible(c * width, 8)

    table = V3_LARGE if size == "large" else V3_SMALL
    blocks, in_ch, first_s2 = [], scaled(V3_HEADS[size][0]), True
    for filters, depth, stride, kernel, expanded, se, act in table:
        filters = scaled(filters)
        if cifar and stride == 2 and first_s2:
            stride, first_s2 = 1, False
        ratios, c = [], in_ch
        for e in expanded:
            ratios.append(scaled(e) / c)
            c = filters
        opts = dict(expansion_options=(1.0, 3.0, 6.0) if ratios == [1.0] else (0.5, 0.75, 1.0),
                    se_options=(False, True), act_options=("relu", "hswish"))
        opts.update(block_options)
        blocks.append(BlockSpec(filters=filters, depth=depth, stride=stride, kernel=kernel, expansion=tuple(ratios),
                                se=se, act=act, **opts))
        in_ch = filters
    stem, _, fc = V3_HEADS[size]
    # torchvision: the last conv is 6x the last block's channels (960 / 576 at width 1)
    stem, last, fc = scaled(stem), 6 * in_ch, scaled(fc)
    name = f"mobilenetv3-{size}" + ("" if width == 1.0 else f"-{width:g}") + ("-cifar" if cifar else "")
    return BackboneSpec(
        name=name, resolution=resolution, num_classes=num_classes,
        stem_channels=stem, stem_stride=1 if cifar else 2, stem_act="hswish", blocks=tuple(blocks),
        head_channels=last, head_act="hswish", fc_channels=(fc,), fc_act="hswish",
        se_ratio=0.25, se_from="expanded", se_divisor=8, se_gate="hsigmoid", se_act="relu",
        bn_eps=1e-3, bn_momentum=0.99,
    )


def mobilenet_v3_large(resolution: int = 224, num_classes: int = 1000, latency_lut=None, **block_options):
    """MobileNetV3-Large (registry name ``mobilenetv3-large``)."""
    return LayerwiseSpace(mobilenet_v3_spec("large", resolution, num_classes, False, **block_options), latency_lut)


def mobilenet_v3_small(resolution: int = 224, num_classes: int = 1000, latency_lut=None, **block_options):
    """MobileNetV3-Small (registry name ``mobilenetv3-small``)."""
    return LayerwiseSpace(mobilenet_v3_spec("small", resolution, num_classes, False, **block_options), latency_lut)


def mobilenet_v3_large_cifar(resolution: int = 32, num_classes: int = 10, latency_lut=None, **block_options):
    """CIFAR-size MobileNetV3-Large (registry name ``mobilenetv3-large-cifar``)."""
    return LayerwiseSpace(mobilenet_v3_spec("large", resolution, num_classes, True, **block_options), latency_lut)


def mobilenet_v3_small_cifar(resolution: int = 32, num_classes: int = 10, latency_lut=None, width: float = 1.0,
                             **block_options):
    """CIFAR-size MobileNetV3-Small (registry name ``mobilenetv3-small-cifar``); ``width``
    scales its channels as torchvision's ``width_mult`` does."""
    return LayerwiseSpace(mobilenet_v3_spec("small", resolution, num_classes, True, width, **block_options),
                          latency_lut)


SPACES = {
    "mobilenetv3-large": mobilenet_v3_large,
    "mobilenetv3-small": mobilenet_v3_small,
    "mobilenetv3-large-cifar": mobilenet_v3_large_cifar,
    "mobilenetv3-small-cifar": mobilenet_v3_small_cifar,
}
