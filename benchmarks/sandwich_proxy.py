"""How close the differentiable JPEG proxy is to real JPEG (Pillow/libjpeg, 4:4:4).

    python benchmarks/sandwich_proxy.py --fit     # fit the rate-proxy constants on training photos
    python benchmarks/sandwich_proxy.py           # measure on the held-out photos, write JSON

``--fit`` least-squares fits ``RATE_PER_LOG``, ``RATE_PER_NONZERO`` and ``RATE_PER_BLOCK`` of
:mod:`layernas.trainers.jpeg_proxy` to the entropy-coded bits Pillow writes, on centre crops of
the first ``--photos`` training photos (those at least ``--crop`` on each side) at qualities 5..95, and prints them (paste them into
the module). The default run measures, on the 8 held-out validation photos (never Kodak):
the PSNR of the proxy's hard-rounded reconstruction minus the PSNR of the real JPEG at the same
quality, the rate proxy's relative error against the real entropy-coded bytes, and the Spearman
correlation of proxy bits and real file bytes across qualities. Writes
``results/codec/sandwich/proxy/proxy.json`` and ``provenance.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)


def measure(images, crop: int, qualities=QUALITIES) -> list[dict]:
    """One row per (image, quality): proxy terms, proxy bits, real bytes, both PSNRs.

    Args:
      images: HxWx3 uint8 photos (each at least ``crop`` on both sides).
      crop: side of the centre crop coded.
      qualities: JPEG qualities.
    Returns:
      a list of dicts.
    """
    import jax
    import jax.numpy as jnp

    from layernas.trainers import jpeg_proxy as jp
    from layernas.trainers.codec_train import center_crops
    from layernas.trainers.image_quality import psnr

    coefficients = jax.jit(jp.dct_coefficients)
    proxy = jax.jit(jp.jpeg_proxy)
    rows = []
    images = [im for im in images if min(im.shape[:2]) >= crop]  # a few photos are 159 px high
    for i, im in enumerate(images):
        x = jnp.asarray(center_crops([im], crop))
        u8 = np.asarray(jnp.round(x[0] * 255)).astype(np.uint8)
        for q in qualities:
            tables = jp.quant_tables(q)
            k = np.asarray(coefficients(x, tables))
            n, c, bh, bw = k.shape[:4]
            ac = k.reshape(n, c, bh * bw, 64)[..., 1:]
            dc = k[..., 0, 0].reshape(n, c, bh * bw)
            ddc = np.diff(dc, axis=-1, prepend=0)
            x_hat, bits = proxy(x, tables)
            data = jp.jpeg_encode(u8, q)
            rows.append({
                "image": i, "quality": q,
                "log_terms": float(np.log2(1 + np.abs(ac)).sum() + np.log2(1 + np.abs(ddc)).sum()),
                "nonzero": float((ac != 0).sum()), "blocks": float(c * bh * bw),
                "proxy_bits": float(bits[0]), "payload_bits": 8.0 * jp.payload_bytes(data),
                "file_bytes": len(data),
                "proxy_psnr": psnr(u8, np.round(np.asarray(x_hat[0]) * 255)),
                "jpeg_psnr": psnr(u8, jp.jpeg_decode(data)),
            })
    return rows


def fit(rows) -> np.ndarray:
    """Least-squares (RATE_PER_LOG, RATE_PER_NONZERO, RATE_PER_BLOCK) from :func:`measure` rows."""
    a = np.array([[r["log_terms"], r["nonzero"], r["blocks"]] for r in rows])
    y = np.array([r["payload_bits"] for r in rows])
    return np.linalg.lstsq(a, y, rcond=None)[0]


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fit", action="store_true", help="fit the rate constants on training photos")
    p.add_argument("--photos", type=int, default=20, help="--fit: how many training photos")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--out", default=str(REPO / "results" / "codec" / "sandwich" / "proxy" / "proxy.json"))
    args = p.parse_args(argv)

    from layernas.provenance import write_provenance
    from layernas.trainers.codec_train import load_images, split_photos

    start = time.time()
    shared = REPO.parent / "shared"
    train, val = split_photos(load_images(shared / "data" / "photos"))
    if args.fit:
        rows = measure(train[:args.photos], args.crop)
        coef = fit(rows)
        pred = np.array([[r["log_terms"], r["nonzero"], r["blocks"]] for r in rows]) @ coef
        y = np.array([r["payload_bits"] for r in rows])
        rel = np.abs(pred - y) / y
        print(f"RATE_PER_LOG = {coef[0]:.3f}\nRATE_PER_NONZERO = {coef[1]:.3f}\nRATE_PER_BLOCK = {coef[2]:.3f}")
        print(f"fit on {len(rows)} crops: relative error median {np.median(rel):.3f}, max {rel.max():.3f}; "
              f"{time.time() - start:.1f} s")
        return
    rows = measure(val, args.crop)
    gap = np.array([r["proxy_psnr"] - r["jpeg_psnr"] for r in rows])
    rel = np.array([(r["proxy_bits"] - r["payload_bits"]) / r["payload_bits"] for r in rows])
    per_image = [spearman([r["proxy_bits"] for r in rows if r["image"] == i],
                          [r["file_bytes"] for r in rows if r["image"] == i]) for i in range(len(val))]
    pixels = args.crop ** 2
    by_quality = {q: {"jpeg_psnr": float(np.mean([r["jpeg_psnr"] for r in rows if r["quality"] == q])),
                      "psnr_gap_db": float(np.mean([r["proxy_psnr"] - r["jpeg_psnr"] for r in rows if r["quality"] == q])),
                      "real_bpp": float(np.mean([8 * r["file_bytes"] / pixels for r in rows if r["quality"] == q])),
                      "proxy_bpp": float(np.mean([r["proxy_bits"] / pixels for r in rows if r["quality"] == q]))}
                  for q in QUALITIES}
    summary = {
        "images": f"{len(val)} held-out photos, centre {args.crop}x{args.crop} crops", "qualities": list(QUALITIES),
        "psnr_gap_db_mean": float(gap.mean()), "psnr_gap_db_max_abs": float(np.abs(gap).max()),
        "rate_rel_error_median": float(np.median(np.abs(rel))), "rate_rel_error_max": float(np.abs(rel).max()),
        "spearman_proxy_bits_vs_file_bytes_min": float(min(per_image)),
        "spearman_all_rows": spearman([r["proxy_bits"] for r in rows], [r["file_bytes"] for r in rows]),
        "by_quality": by_quality, "seconds": time.time() - start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "by_quality"}, indent=2))
    for q, v in by_quality.items():
        print(f"q{q:3d}: JPEG {v['jpeg_psnr']:.2f} dB, proxy-JPEG {v['psnr_gap_db']:+.3f} dB, "
              f"real {v['real_bpp']:.3f} bpp (file), proxy {v['proxy_bpp']:.3f} bpp (no header)")
    write_provenance(out.parent, time.time() - start, " ".join(["python"] + sys.argv), args=vars(args))


if __name__ == "__main__":
    main()
