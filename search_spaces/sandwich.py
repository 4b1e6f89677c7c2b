"""``codec-sandwich``: U-Net widths of a sandwiched JPEG codec (Guleryuz et al.).

The model is :class:`layernas.trainers.sandwich_model.Sandwich`: a pre-processor U-Net, baseline
JPEG (4:4:4) in the middle, a post-processor U-Net. One decision per layer:

============  ==========================================  =======
layer         options                                     default
============  ==========================================  =======
``post_w{i}`` post U-Net width at level i (i = 0, 1, 2)   48
              8, 16, 32, 48
``quality``   JPEG quality 10, 25, 50, 75, 90             75
``pre_w{i}``  pre U-Net width at level i                  48
============  ==========================================  =======

Level 0 is full resolution, level i is 1/2^i. The width defaults are the most expensive
options, as in the LayerNAS paper. The quality costs no compute, so its default is the
libjpeg/Pillow default, 75. LayerNAS searches the layers in this order: the post U-Net first,
because it alone sets the decoder cost a target is put on (so the first children of a tight
``--target-decoder-gmacs`` are already feasible), then the quality, then the pre U-Net.

Costs (``cost(arch)``), counted with :mod:`layernas.cost_model` at 768x512 (Kodak):

* ``decoder_madds``: multiply-adds per image pixel of the post U-Net only. The JPEG decode
  itself (entropy decoding, IDCT, colour conversion) is **not** counted: it is the same for
  every architecture and runs in a fixed-function/libjpeg path, not in the searched network.
  Convs count ``H_out*W_out*k*k*C_in*C_out``; pooling, nearest upsampling, concatenation,
  ReLU, biases and the residual add cost nothing.
* ``decoder_gmacs``: the same for one 768x512 image, in GMACs (1e9).
* ``encoder_madds``: the pre U-Net per pixel (the JPEG encode is not counted either).
* ``decoder_params``: parameters of the post U-Net; ``params``: both U-Nets.

The all-default (48, 48, 48) U-Net costs 59,760 MAC/pixel (23.50 GMACs at 768x512), against
43,540 for the hyperprior's decoder; the cheapest (8, 8, 8) costs 1,860.

Example:
    >>> space = SandwichSpace()
    >>> space.cost(space.default_arch())["decoder_madds"]
    59760.0
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from layernas import cost_model as cm
from layernas.space import Layer, NamedOptionStrings, SearchSpace

REFERENCE_SIZE = (512, 768)  # Kodak, H x W
WIDTHS = (8, 16, 32, 48)
QUALITIES = (10, 25, 50, 75, 90)
LEVELS = 3


def check_quality(quality) -> int:
    """A JPEG quality as an int, or ValueError naming it.

    Args:
      quality: an integer in 1..100 (Python or numpy; not a bool).
    Returns:
      ``int(quality)``.
    """
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality {quality!r}: expected an integer in 1..100")
    return int(quality)


def _check_widths(name: str, widths) -> tuple[int, ...]:
    widths = tuple(widths)
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"{name} {widths!r}: expected a non-empty tuple of positive integers, one per level")
    return widths


@dataclasses.dataclass(frozen=True)
class SandwichConfig:
    """One sandwich architecture.

    Args:
      pre_widths: the pre-processor U-Net's width per level (level 0 is full resolution).
      post_widths: the post-processor U-Net's width per level.
      quality: the JPEG quality (1..100) of the codec in the middle.
    """

    pre_widths: tuple[int, ...] = (48, 48, 48)
    post_widths: tuple[int, ...] = (48, 48, 48)
    quality: int = 75

    def __post_init__(self):
        object.__setattr__(self, "pre_widths", _check_widths("pre_widths", self.pre_widths))
        object.__setattr__(self, "post_widths", _check_widths("post_widths", self.post_widths))
        check_quality(self.quality)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (the deeper U-Net's pooling)."""
        return 2 ** (max(len(self.pre_widths), len(self.post_widths)) - 1)

    def scaled(self, scale: float, minimum: int = 4) -> "SandwichConfig":
        """Every width multiplied by ``scale`` (rounded, at least ``minimum``): the search's
        cheap training proxy. The quality is kept.

        Args:
          scale: width multiplier in (0, 1].
          minimum: the smallest width.
        Returns:
          the scaled config (``self`` when ``scale == 1``).
        """
        if not 0 < scale <= 1:
            raise ValueError(f"width scale {scale}: expected a number in (0, 1]")
        if scale == 1:
            return self
        s = lambda ws: tuple(max(minimum, int(round(w * scale))) for w in ws)  # noqa: E731
        return dataclasses.replace(self, pre_widths=s(self.pre_widths), post_widths=s(self.post_widths))


def unet_cost(widths: Sequence[int], size: tuple[int, int] = REFERENCE_SIZE, prefix: str = "unet") -> cm.NetworkCost:
    """Per-layer cost of one :class:`~layernas.trainers.sandwich_model.UNet` on an HxW image.

    Args:
      widths: channels per level (full resolution first).
      size: (H, W); multiples of ``2**(len(widths) - 1)``.
      prefix: layer-name prefix.
    Returns:
      the :class:`~layernas.cost_model.NetworkCost` (convs with biases, free pools/adds).
    """
    h, w = size
    m = 2 ** (len(widths) - 1)
    if h % m or w % m:
        raise ValueError(f"size {h}x{w}: a {len(widths)}-level U-Net needs sides that are multiples of {m}")
    b = cm.CostBuilder((h, w, 3))
    for i, width in enumerate(widths):
        if i:
            b.pool2d(f"{prefix}.pool{i}", 2)
        b.conv2d(f"{prefix}.enc{i}", width, kernel=3, bias=True).activation(f"{prefix}.enc{i}_act", "relu")
    for i in reversed(range(len(widths) - 1)):
        # nearest x2 upsampling is free; the conv sees the upsampled input concatenated with the skip
        hi, wi = h // 2 ** i, w // 2 ** i
        b.add(cm.conv2d(f"{prefix}.dec{i}", (hi, wi, b.shape[2] + widths[i]), widths[i], kernel=3, bias=True))
        b.activation(f"{prefix}.dec{i}_act", "relu")
    b.conv2d(f"{prefix}.out", 3, kernel=1, bias=True).residual_add(f"{prefix}.residual")
    return b.result()


def _layers(widths, qualities) -> tuple[Layer, ...]:
    default_quality = qualities.index(75) if 75 in qualities else len(qualities) - 1
    post = [Layer(f"post_w{i}", tuple(widths), default=len(widths) - 1) for i in range(LEVELS)]
    pre = [Layer(f"pre_w{i}", tuple(widths), default=len(widths) - 1) for i in range(LEVELS)]
    return tuple(post + [Layer("quality", tuple(qualities), default=default_quality)] + pre)


class SandwichSpace(NamedOptionStrings, SearchSpace):
    """The sandwich space (see the module docstring).

    Args:
      widths: the width options of every U-Net level, ascending (the last is the default).
      qualities: the JPEG quality options (the default is 75 when offered, else the last).
    """

    name = "codec-sandwich"
    cost_metrics = ("decoder_madds", "decoder_gmacs", "encoder_madds", "decoder_params", "params")

    def __init__(self, widths: Sequence[int] = WIDTHS, qualities: Sequence[int] = QUALITIES):
        widths, qualities = tuple(widths), tuple(qualities)
        if not widths or list(widths) != sorted(set(widths)) or widths[0] < 1:
            raise ValueError(f"widths {widths!r}: expected distinct positive integers in ascending order")
        if not qualities:
            raise ValueError("qualities (): expected at least one JPEG quality in 1..100")
        for q in qualities:
            check_quality(q)
        self.widths, self.qualities = widths, qualities
        self.layers = _layers(widths, qualities)

    def config(self, arch) -> SandwichConfig:
        """The :class:`SandwichConfig` of an architecture."""
        arch = self.validate(arch)
        o = lambda name: self.option(arch, name)  # noqa: E731
        return SandwichConfig(pre_widths=tuple(o(f"pre_w{i}") for i in range(LEVELS)),
                              post_widths=tuple(o(f"post_w{i}") for i in range(LEVELS)), quality=o("quality"))

    def cost(self, arch) -> dict[str, float]:
        """Every cost metric of ``arch`` (module docstring): the U-Nets' MACs and parameters.

        Args:
          arch: a complete architecture (option indices).
        Returns:
          ``{metric: value}`` for every name in ``cost_metrics``.
        """
        config = self.config(arch)
        pre, post = unet_cost(config.pre_widths, prefix="pre"), unet_cost(config.post_widths, prefix="post")
        pixels = REFERENCE_SIZE[0] * REFERENCE_SIZE[1]
        return {
            "decoder_madds": post.madds / pixels,
            "decoder_gmacs": post.madds / 1e9,
            "encoder_madds": pre.madds / pixels,
            "decoder_params": float(post.params),
            "params": float(pre.params + post.params),
        }
