"""The MBConv classifiers (MobileNetV2/V3, MnasNet) in PyTorch, for the train-step comparison.

:class:`TorchMobileNet` mirrors :class:`layernas.trainers.mbconv_model.MobileNet` op for op
from the same resolved :class:`~layernas.search_spaces.mbconv.Network`: stem conv + BN +
act, the inverted-residual layers (1x1 expand + BN + act, depthwise kxk + BN + act,
optional squeeze-excite, 1x1 project + BN, residual when the shapes allow), the 1x1 head
conv + BN + act, global average pooling, hidden FCs and the classifier. "SAME" padding is
written as torch's symmetric ``k // 2`` padding at stride 1 and as an explicit
asymmetric pad at stride 2 (TensorFlow's convention, which flax follows). It is used only
by ``benchmarks/mobilenet_step.py``; it is not part of the library.

Example:
    >>> from layernas.search_spaces.mobilenet_v2 import mobilenet_v2_cifar  # doctest: +SKIP
    >>> space = mobilenet_v2_cifar()                                          # doctest: +SKIP
    >>> net = TorchMobileNet(space.resolve(space.default_arch()))             # doctest: +SKIP
    >>> net(torch.zeros(2, 3, 32, 32)).shape                                  # doctest: +SKIP
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "swish": nn.SiLU, "sigmoid": nn.Sigmoid,
        "hsigmoid": nn.Hardsigmoid, "identity": nn.Identity}


class SamePad(nn.Module):
    """TensorFlow/flax "SAME" padding for a stride-s conv of kernel k (extra pixel at the end)."""

    def __init__(self, k: int, s: int):
        super().__init__()
        self.k, self.s = k, s

    def forward(self, x):
        h, w = x.shape[-2:]
        ph = max((-(-h // self.s) - 1) * self.s + self.k - h, 0)
        pw = max((-(-w // self.s) - 1) * self.s + self.k - w, 0)
        return nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def conv_bn(c_in: int, c_out: int, k: int, s: int, act: str | None, groups: int = 1, bn_eps: float = 1e-5,
            bn_momentum: float = 0.9) -> nn.Sequential:
    layers: list[nn.Module] = []
    if s == 1:
        conv = nn.Conv2d(c_in, c_out, k, 1, k // 2, groups=groups, bias=False)
    else:
        layers.append(SamePad(k, s))
        conv = nn.Conv2d(c_in, c_out, k, s, 0, groups=groups, bias=False)
    layers += [conv, nn.BatchNorm2d(c_out, eps=bn_eps, momentum=1.0 - bn_momentum)]
    if act:
        layers.append(ACTS[act]())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int, act: str, gate: str):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.act, self.gate = ACTS[act](), ACTS[gate]()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MBConv(nn.Module):
    def __init__(self, layer, net):
        super().__init__()
        bn = dict(bn_eps=net.bn_eps, bn_momentum=net.bn_momentum)
        body: list[nn.Module] = []
        if layer.expand:
            body.append(conv_bn(layer.in_ch, layer.hidden, 1, 1, layer.act, **bn))
        body.append(conv_bn(layer.hidden, layer.hidden, layer.kernel, layer.stride, layer.act, groups=layer.hidden, **bn))
        if layer.se_ch:
            body.append(SqueezeExcite(layer.hidden, layer.se_ch, net.se_act, net.se_gate))
        body.append(conv_bn(layer.hidden, layer.out_ch, 1, 1, None, **bn))
        self.body, self.residual = nn.Sequential(*body), layer.residual

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class TorchMobileNet(nn.Module):
    """The PyTorch twin of ``mbconv_model.MobileNet(net)``."""

    def __init__(self, net):
        super().__init__()
        bn = dict(bn_eps=net.bn_eps, bn_momentum=net.bn_momentum)
        self.stem = conv_bn(net.in_channels, net.stem_ch, net.stem_kernel, net.stem_stride, net.stem_act, **bn)
        self.layers = nn.Sequential(*(MBConv(layer, net) for layer in net.layers))
        last = net.layers[-1].out_ch if net.layers else net.stem_ch
        self.head = conv_bn(last, net.head_ch, 1, 1, net.head_act, **bn) if net.head_ch else nn.Identity()
        width = net.head_ch or last
        fcs: list[nn.Module] = []
        for hidden in net.fc:
            fcs += [nn.Linear(width, hidden), ACTS[net.fc_act]()]
            width = hidden
        self.fc = nn.Sequential(*fcs)
        self.classifier = nn.Linear(width, net.num_classes)

    def forward(self, x):
        x = self.head(self.layers(self.stem(x)))
        return self.classifier(self.fc(x.mean((2, 3))))
