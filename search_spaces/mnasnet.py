"""MnasNet-A1 (Tan et al. 2019) as a layerwise space: the reference for the cost model.

The base network is the paper's Figure 7 / tf-models ``mnasnet_a1``: stem 32, a separable
conv block to 16, then MBConv blocks (t, k, filters, n, s, SE) = (6,3,24,2,2,-),
(3,5,40,3,2,SE), (6,3,80,4,2,-), (6,3,112,2,1,SE), (6,5,160,3,2,SE), (6,3,320,1,1,-), a 1x1
conv to 1280 and the classifier. SE squeezes to ``input_filters * 0.25`` with a sigmoid
gate. All-default: 311.6M MAdds (the paper's 312M) and 3.89M params at 224x224.
"""

from __future__ import annotations

from layernas.search_spaces.layerwise import BackboneSpec, BlockSpec, LayerwiseSpace

MNASNET_A1 = ((1, 3, 16, 1, 1, False), (6, 3, 24, 2, 2, False), (3, 5, 40, 3, 2, True), (6, 3, 80, 4, 2, False),
              (6, 3, 112, 2, 1, True), (6, 5, 160, 3, 2, True), (6, 3, 320, 1, 1, False))


def mnasnet_a1(resolution: int = 224, num_classes: int = 1000, latency_lut=None, **block_options) -> LayerwiseSpace:
    """The MnasNet-A1 space (registry name ``mnasnet-a1``); options as MobileNetV2 plus SE."""
    blocks = []
    for t, k, c, n, s, se in MNASNET_A1:
        opts = dict(expansion_options=(1.0, 3.0, 6.0) if t == 1 else (0.5, 1.0, 2.0 if t == 3 else 1.25),
                    se_options=(False, True), act="relu")
        opts.update(block_options)
        blocks.append(BlockSpec(filters=c, depth=n, stride=s, kernel=k, expansion=(float(t),), se=se, **opts))
    spec = BackboneSpec(
        name="mnasnet-a1", resolution=resolution, num_classes=num_classes, stem_channels=32, stem_stride=2,
        stem_act="relu", blocks=tuple(blocks), head_channels=1280, head_act="relu",
        se_ratio=0.25, se_from="input", se_divisor=1, se_gate="sigmoid", se_act="relu", bn_eps=1e-3, bn_momentum=0.99,
    )
    return LayerwiseSpace(spec, latency_lut)


SPACES = {"mnasnet-a1": mnasnet_a1}
