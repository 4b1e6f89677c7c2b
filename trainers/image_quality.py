"""Full-reference image quality: PSNR and MS-SSIM (numpy + scipy, no framework).

MS-SSIM follows Wang, Simoncelli & Bovik (2003) with the settings every learned-codec paper
reports (the ones in ``tf.image.ssim_multiscale`` and ``pytorch_msssim``): an 11-tap Gaussian
window with sigma 1.5, "valid" filtering, K1=0.01, K2=0.03, five scales with weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling between scales, contrast-structure
terms clipped at 0 and the colour channels scored separately, then averaged.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).integers(0, 256, (192, 192, 3)).astype(np.uint8)
    >>> round(ms_ssim(x, x), 6)
    1.0
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
# the coarsest of the 5 scales must still hold one window: (11 - 1) * 2^4 + 1 = 161 pixels
MS_SSIM_MIN_SIDE = (WINDOW_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1


def psnr(reference: np.ndarray, distorted: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels.

    Args:
      reference, distorted: arrays of the same shape (uint8 or float).
      data_range: the peak value (255 for uint8 images).
    Returns:
      PSNR in dB (capped at 10*log10(range^2 / 1e-12) for identical inputs).
    """
    a, b = _pair(reference, distorted)
    mse = float(np.mean((a - b) ** 2))
    return float(10 * np.log10(data_range ** 2 / max(mse, 1e-12)))


def _pair(reference, distorted) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(reference, np.float64), np.asarray(distorted, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a, b


def _gaussian_window() -> np.ndarray:
    x = np.arange(WINDOW_SIZE) - (WINDOW_SIZE - 1) / 2
    w = np.exp(-0.5 * (x / WINDOW_SIGMA) ** 2)
    return w / w.sum()


def _blur_valid(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable Gaussian filtering of (H, W, C) keeping only the 'valid' region."""
    half = len(window) // 2
    y = correlate1d(correlate1d(x, window, axis=0, mode="constant"), window, axis=1, mode="constant")
    return y[half:x.shape[0] - half, half:x.shape[1] - half]


def ssim_components(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of two (H, W, C) images.

    Args:
      a, b: float arrays of shape (H, W, C) with H, W >= 11.
      data_range: the peak value.
    Returns:
      (ssim, cs), each of shape (C,).
    """
    window = _gaussian_window()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _blur_valid(a, window), _blur_valid(b, window)
    var_a = _blur_valid(a * a, window) - mu_a ** 2
    var_b = _blur_valid(b * b, window) - mu_b ** 2
    cov = _blur_valid(a * b, window) - mu_a * mu_b
    cs_map = (2 * cov + c2) / (var_a + var_b + c2)
    ssim_map = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1) * cs_map
    return ssim_map.mean(axis=(0, 1)), cs_map.mean(axis=(0, 1))


def ssim(reference: np.ndarray, distorted: np.ndarray, data_range: float = 255.0) -> float:
    """Single-scale SSIM (Gaussian window, valid filtering), averaged over channels."""
    a, b = _as_hwc(*_pair(reference, distorted))
    return float(np.mean(ssim_components(a, b, data_range)[0]))


def _as_hwc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.ndim == 2:
        return a[..., None], b[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")
    return a, b


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling; an odd last row/column is dropped."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim(reference: np.ndarray, distorted: np.ndarray, data_range: float = 255.0) -> float:
    """Multi-scale SSIM (5 scales) between two images.

    Args:
      reference, distorted: (H, W) or (H, W, C) arrays of the same shape; the smaller side
        must be at least 161 pixels (= (11 - 1) * 2^4 + 1) so the coarsest scale still fits
        the 11-pixel window.
      data_range: the peak value (255 for uint8 images, 1.0 for [0, 1] floats).
    Returns:
      MS-SSIM in [0, 1] (1 for identical images), averaged over channels.
    """
    a, b = _as_hwc(*_pair(reference, distorted))
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"image {a.shape[0]}x{a.shape[1]} is too small for 5-scale MS-SSIM: "
                         f"each side must be at least {MS_SSIM_MIN_SIDE} pixels")
    weights = np.asarray(MS_SSIM_WEIGHTS)
    terms = []
    for scale in range(len(weights)):
        s, cs = ssim_components(a, b, data_range)
        if scale == len(weights) - 1:
            terms.append(np.maximum(s, 0.0))
        else:
            terms.append(np.maximum(cs, 0.0))
            a, b = _avg_pool2(a), _avg_pool2(b)
    per_channel = np.prod(np.stack(terms) ** weights[:, None], axis=0)
    return float(np.mean(per_channel))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the decibel scale papers plot: -10 log10(1 - MS-SSIM)."""
    return float(-10 * np.log10(max(1.0 - value, 1e-12)))
