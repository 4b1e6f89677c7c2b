"""The codec RD benchmark's pieces: BD-rate, the published reference points, JPEG anchors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_trainer_benchmarks import _import_bench

pytest.importorskip("bjontegaard")
codec_rd = _import_bench("codec_rd")


def _curve(method, bpp, psnr):
    return pd.DataFrame({"method": method, "setting": np.arange(len(bpp)), "bpp_real": bpp, "psnr": psnr,
                         "ms_ssim_db": psnr / 2})


def test_bd_rate_measures_a_known_saving_and_refuses_without_overlap():
    bpp = np.array([0.2, 0.4, 0.8, 1.6])
    psnr = 24 + 4 * np.log2(bpp / 0.2)
    curves = pd.concat([_curve("JPEG (Pillow)", bpp, psnr),
                        _curve("ours", 0.8 * bpp, psnr),              # 20 % fewer bits everywhere
                        _curve("far", bpp, psnr - 40)])               # no PSNR overlap
    bd = codec_rd.bd_rates(curves, "JPEG (Pillow)", "psnr")
    assert bd["ours"] == pytest.approx(-20.0, abs=0.5)
    assert np.isnan(bd["far"])
    assert codec_rd.bd_rates(curves, "JPEG (Pillow)", "ms_ssim_db")["ours"] == pytest.approx(-20.0, abs=0.5)


def test_reference_points_agree_with_published_values():
    ref = codec_rd.load_reference_points()
    assert set(ref.method) == {"CompressAI bmshj2018-hyperprior", "CompressAI bmshj2018-factorized"}
    assert (ref.groupby("method").size() == 8).all()
    q3 = ref[ref.setting == 3].set_index("method")
    # CompressAI's published Kodak points (github.com/InterDigitalInc/CompressAI,
    # results/kodak/): factorized q3 0.288 / 29.62, hyperprior q3 0.320 / 30.97
    assert q3.loc["CompressAI bmshj2018-factorized", ["bpp_real", "psnr"]].tolist() == pytest.approx([0.288, 29.61], abs=0.01)
    assert q3.loc["CompressAI bmshj2018-hyperprior", ["bpp_real", "psnr"]].tolist() == pytest.approx([0.320, 30.97], abs=0.01)
    assert (np.diff(ref[ref.method == "CompressAI bmshj2018-hyperprior"].ms_ssim_db) > 0).all()


def test_jpeg_points_rate_and_quality_rise_with_quality():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:192, :192]
    im = np.clip(128 + 50 * np.sin(xx / 7)[..., None] + rng.normal(0, 10, (192, 192, 3)), 0, 255).astype(np.uint8)
    df = codec_rd.jpeg_points([("a", im), ("b", im[::-1].copy())])
    mean = df.groupby("setting")[["bpp_real", "psnr", "ms_ssim"]].mean().sort_index()
    assert list(mean.index) == sorted(codec_rd.JPEG_QUALITIES)
    assert mean.bpp_real.iloc[-1] > mean.bpp_real.iloc[0] and mean.psnr.iloc[-1] > mean.psnr.iloc[0]
    assert mean.ms_ssim.iloc[-1] > mean.ms_ssim.iloc[0] and (mean.ms_ssim <= 1).all()


def test_summary_table_plot_and_bd_rates_from_per_image_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(codec_rd, "OUT", tmp_path)
    rows = []
    for method, settings, saving in [("JPEG (Pillow)", (5, 10, 20, 40), 1.0), ("ours", (0.0067, 0.013, 0.025, 0.0483), 0.7)]:
        for i, s in enumerate(settings):
            for image in ("kodim01", "kodim02"):
                bpp = 0.25 * 2 ** i
                rows.append({"method": method, "setting": s, "image": image, "bpp_real": saving * bpp,
                             "bpp_est": np.nan if method.startswith("JPEG") else saving * bpp / 1.02,
                             "psnr": 24 + 3 * i, "ms_ssim": 1 - 0.1 / 2 ** i, "encode_s": 0.1, "decode_s": 0.05,
                             "bit_exact": True})
    pd.DataFrame(rows).to_csv(tmp_path / "rd_per_image.csv", index=False)
    pd.DataFrame([{"model": "ours", "arch": "M=192", "decoder_madds": 43540.0, "decoder_gmacs": 17.12}]).to_csv(
        tmp_path / "decoder_cost.csv", index=False)
    args = codec_rd.build_parser().parse_args([])
    codec_rd.write_summary(args)
    cost = pd.read_csv(tmp_path / "decoder_cost.csv")
    assert cost.bd_rate_psnr_vs_jpeg_pct.iloc[0] == pytest.approx(-30.0, abs=0.5)
    assert cost.bd_rate_msssim_vs_jpeg_pct.iloc[0] == pytest.approx(-30.0, abs=0.5)
    assert cost.decode_s_per_image.iloc[0] == pytest.approx(0.05)
    curves = pd.read_csv(tmp_path / "rd_curves.csv")
    assert len(curves) == 8 and (curves.images == 2).all()
    summary = (tmp_path / "summary.md").read_text()
    assert "| ours | -30.0" in summary.replace("-29.9", "-30.0") and "+2.00 %" in summary
    assert (tmp_path / "rd_kodak.png").stat().st_size > 10_000


def test_bd_rate_drops_dominated_points_and_says_so():
    bpp = np.array([0.2, 0.4, 0.8, 1.6])
    psnr = 24 + 4 * np.log2(bpp / 0.2)
    ours = _curve("ours", 0.8 * bpp, psnr).assign(setting=[1, 2, 3, 4])
    # an under-trained extra point: more bits than setting 4, less quality than setting 2
    ours = pd.concat([ours, _curve("ours", np.array([2.0]), np.array([27.0])).assign(setting=[5])])
    curves = pd.concat([_curve("JPEG (Pillow)", bpp, psnr).assign(setting=[5, 10, 20, 40]), ours])
    kept, dropped = codec_rd.monotone_points(ours, "psnr")
    assert dropped == [5] and list(kept.setting) == [1, 2, 3, 4]
    notes = {}
    bd = codec_rd.bd_rates(curves, "JPEG (Pillow)", "psnr", notes)
    assert bd["ours"] == pytest.approx(-20.0, abs=0.5)
    assert "dropped settings [5]" in notes["ours"] and "psnr 24.00..36.00" in notes["ours"]


def test_rate_vs_anchor_per_point_and_narrow_overlap_gives_nan():
    bpp = np.array([0.2, 0.4, 0.8, 1.6])
    psnr = 24 + 4 * np.log2(bpp / 0.2)
    flat = _curve("flat", np.array([0.5, 0.7]), np.array([25.0, 25.3]))
    curves = pd.concat([_curve("JPEG (Pillow)", bpp, psnr), _curve("ours", 0.8 * bpp, psnr), flat,
                        _curve("above", np.array([2.0]), np.array([50.0]))])
    rows = codec_rd.rate_vs_anchor(curves, "JPEG (Pillow)", "psnr").set_index("method")
    assert rows.loc["ours", "rate_vs_anchor_pct"].tolist() == pytest.approx([-20.0] * 4, abs=1e-6)
    assert np.isnan(rows.loc["above", "rate_vs_anchor_pct"])  # outside JPEG's range: no number
    notes = {}
    bd = codec_rd.bd_rates(curves, "JPEG (Pillow)", "psnr", notes)
    assert np.isnan(bd["flat"]) and "narrower than 1.0 dB" in notes["flat"]
