"""PSNR and MS-SSIM: parity with dm-pix's SSIM and the properties MS-SSIM must have."""

import numpy as np
import pytest

from layernas.trainers.image_quality import ms_ssim, ms_ssim_db, psnr, ssim


def _pair(seed=0, shape=(176, 200, 3), noise=20.0):
    rng = np.random.default_rng(seed)
    # a smooth image (structure at several scales) plus noise
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 128 + 60 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None] + rng.normal(0, 15, shape)
    ref = np.clip(base, 0, 255).astype(np.uint8)
    dist = np.clip(ref + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
    return ref, dist


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_dm_pix(seed):
    pix = pytest.importorskip("dm_pix")
    ref, dist = _pair(seed)
    expected = float(pix.ssim(ref.astype(np.float32), dist.astype(np.float32), max_val=255.0))
    assert ssim(ref, dist) == pytest.approx(expected, abs=2e-4)


def test_ms_ssim_properties():
    ref, light = _pair(noise=5.0)
    _, heavy = _pair(noise=40.0)
    assert ms_ssim(ref, ref) == pytest.approx(1.0)
    assert 0 < ms_ssim(ref, heavy) < ms_ssim(ref, light) < 1
    assert ms_ssim(ref, light) == pytest.approx(ms_ssim(light, ref), abs=1e-12)
    # the data range is a scale: [0, 1] floats give the same value
    assert ms_ssim(ref / 255.0, light / 255.0, data_range=1.0) == pytest.approx(ms_ssim(ref, light), abs=1e-9)
    # grey images work, and MS-SSIM weighs coarse scales: it forgives noise more than SSIM does
    assert ms_ssim(ref[..., 0], heavy[..., 0]) > ssim(ref[..., 0], heavy[..., 0])
    assert ms_ssim_db(ms_ssim(ref, light)) > ms_ssim_db(ms_ssim(ref, heavy))


def test_psnr_known_value():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a + 5
    assert psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / 25))


@pytest.mark.parametrize("shape_a,shape_b,match", [((170, 170, 3), (170, 171, 3), "shapes differ"),
                                                   ((160, 300, 3), (160, 300, 3), "at least 161"),
                                                   ((170, 170, 3, 1), (170, 170, 3, 1), "expected an")])
def test_ms_ssim_bad_input(shape_a, shape_b, match):
    with pytest.raises(ValueError, match=match):
        ms_ssim(np.zeros(shape_a), np.zeros(shape_b))
