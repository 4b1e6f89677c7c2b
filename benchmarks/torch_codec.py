"""The scale-hyperprior codec in PyTorch, for the codec train-step comparison.

It mirrors :class:`layernas.trainers.codec_model.HyperpriorCodec` for a
:class:`~layernas.trainers.codec_model.CodecConfig` whose synthesis blocks are transposed
convs (the default, CompressAI's ``ScaleHyperprior``): g_a (conv5 s2 + GDN x 3, conv5 s2),
h_a (|y|, conv3, ReLU, conv5 s2, ReLU, conv5 s2), the factorized entropy bottleneck with
filters (3, 3, 3), h_s (deconv5 s2 + ReLU x 2, conv3 + ReLU, scale bound 0.11), g_s
(deconv5 s2 + IGDN x 3, deconv5 s2), the Gaussian conditional, and the RD loss
``lmbda * 255^2 * MSE + bpp``. Same layer shapes, same multiply-adds. It is used only by
``benchmarks/perf_summary.py``; it is not part of the library.

Example:
    >>> net = TorchHyperprior(n=16, m=16)                        # doctest: +SKIP
    >>> out = net(torch.rand(2, 3, 64, 64))                      # doctest: +SKIP
    >>> out["x_hat"].shape                                       # doctest: +SKIP
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11
_PEDESTAL = (2.0 ** -18) ** 2


def conv(c_in: int, c_out: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride, k // 2)


def deconv(c_in: int, c_out: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """'SAME' x2 upsampling, as CompressAI's ``deconv``."""
    return nn.ConvTranspose2d(c_in, c_out, k, stride, k // 2, output_padding=stride - 1)


class GDN(nn.Module):
    """y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2) (IGDN: times), reparameterized."""

    def __init__(self, c: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.sqrt(torch.ones(c) + _PEDESTAL))
        self.gamma = nn.Parameter(torch.sqrt(0.1 * torch.eye(c) + _PEDESTAL))

    def forward(self, x):
        beta = torch.clamp_min(self.beta, math.sqrt(1e-6 + _PEDESTAL)) ** 2 - _PEDESTAL
        gamma = torch.clamp_min(self.gamma, math.sqrt(_PEDESTAL)) ** 2 - _PEDESTAL
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


class EntropyBottleneck(nn.Module):
    def __init__(self, c: int, filters=(3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.mats, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for k in range(len(dims) - 1):
            init = math.log(math.expm1(1.0 / scale / dims[k + 1]))
            self.mats.append(nn.Parameter(torch.full((c, dims[k + 1], dims[k]), init)))
            self.biases.append(nn.Parameter(torch.rand(c, dims[k + 1], 1) - 0.5))
            if k < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(c, dims[k + 1], 1)))

    def logits(self, x):
        for k, (m, b) in enumerate(zip(self.mats, self.biases)):
            x = torch.matmul(F.softplus(m), x) + b
            if k < len(self.factors):
                x = x + torch.tanh(self.factors[k]) * torch.tanh(x)
        return x

    def forward(self, z):
        z_q = z + torch.rand_like(z) - 0.5
        n, c, h, w = z_q.shape
        v = z_q.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower, upper = self.logits(v - 0.5), self.logits(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        lik = lik.reshape(c, n, h, w).permute(1, 0, 2, 3)
        return z_q, torch.clamp_min(lik, LIKELIHOOD_BOUND)


def gaussian_likelihood(y_q, scales):
    v = torch.abs(y_q)
    normal = torch.distributions.Normal(0.0, 1.0)
    lik = normal.cdf((0.5 - v) / scales) - normal.cdf((-0.5 - v) / scales)
    return torch.clamp_min(lik, LIKELIHOOD_BOUND)


class TorchHyperprior(nn.Module):
    """Scale hyperprior with ``n`` hidden channels (g_a, h_a, h_s, g_s) and ``m`` latents."""

    def __init__(self, n: int = 128, m: int = 192):
        super().__init__()
        self.g_a = nn.Sequential(conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m))
        self.h_a = nn.Sequential(conv(m, n, 3, 1), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))
        self.h_s = nn.Sequential(deconv(n, n), nn.ReLU(), deconv(n, n), nn.ReLU(), conv(n, m, 3, 1), nn.ReLU())
        self.g_s = nn.Sequential(deconv(m, n), GDN(n, True), deconv(n, n), GDN(n, True), deconv(n, n),
                                 GDN(n, True), deconv(n, 3))
        self.entropy_bottleneck = EntropyBottleneck(n)

    def forward(self, x):
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        z_q, lik_z = self.entropy_bottleneck(z)
        scales = torch.clamp_min(self.h_s(z_q), SCALE_BOUND)
        y_q = y + torch.rand_like(y) - 0.5
        return {"x_hat": self.g_s(y_q), "lik_y": gaussian_likelihood(y_q, scales), "lik_z": lik_z}


def rd_loss(out: dict, x, lmbda: float):
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = -(torch.log2(out["lik_y"]).sum() + torch.log2(out["lik_z"]).sum()) / num_pixels
    return lmbda * 255.0 ** 2 * F.mse_loss(out["x_hat"], x) + bpp


class TorchCodecStepper:
    """One codec train step: RD loss, backward, global-norm clip, Adam, parameter EMA (as
    the JAX codec trainer's step)."""

    def __init__(self, n: int, m: int, crops, seed: int = 0, channels_last: bool = False, threads: int = 2,
                 lmbda: float = 0.0130, lr: float = 1e-4, ema_decay: float = 0.99):
        torch.manual_seed(seed)
        self.threads = threads
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.net = TorchHyperprior(n, m).to(memory_format=self.fmt).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.ema = [p.detach().clone() for p in self.net.parameters()]
        self.x = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous(memory_format=self.fmt)
        self.lmbda, self.decay = lmbda, ema_decay

    def run(self, steps: int) -> float:
        torch.set_num_threads(self.threads)
        for _ in range(steps):
            loss = rd_loss(self.net(self.x), self.x, self.lmbda)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.net.parameters()], 1 - self.decay)
        return float(loss.detach())
