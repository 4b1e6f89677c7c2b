"""Train one JPEG sandwich through the proxy and score it with real JPEG against plain JPEG.

    python benchmarks/sandwich_rd.py --widths 16 16 16 --quality 25 --steps 400 --lambda 0.013

Trains pre/post U-Nets (``--widths`` per level, both sides) on random 64x64 crops of the
training photos, then evaluates with the real codec (Pillow, 4:4:4) on centre 192x192 crops of
the 8 held-out photos (never Kodak). The baselines are plain JPEG at the same quality and plain
JPEG at the quality (1..100) with the lowest ``lambda*255^2*MSE + bpp`` on the same crops,
the fair comparison, since the sandwich moves the operating point. Writes
``results/codec/sandwich/rd/rd.json`` and ``provenance.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 16, 16])
    p.add_argument("--quality", type=int, default=25)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lambda", dest="lmbda", type=float, default=0.013)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "results" / "codec" / "sandwich" / "rd" / "rd.json"))
    args = p.parse_args(argv)

    from layernas.provenance import write_provenance
    from layernas.trainers.codec_train import center_crops, codec_recipe, default_photos_dir, load_images, split_photos
    from layernas.trainers.image_quality import psnr
    from layernas.trainers.jpeg_proxy import jpeg_decode, jpeg_encode
    from layernas.trainers.sandwich_model import SandwichConfig
    from layernas.trainers.sandwich_train import evaluate_real, train

    start = time.time()
    train_images, val_list = split_photos(load_images(default_photos_dir()))
    val = center_crops(val_list, 192)
    originals = np.round(val * 255).astype(np.uint8)
    config = SandwichConfig(tuple(args.widths), tuple(args.widths), args.quality)
    recipe = codec_recipe(lmbda=args.lmbda, steps=args.steps, batch_size=args.batch_size, crop_size=64,
                         learning_rate=1e-3, warmup_steps=20, ema_decay=0.99, seed=args.seed)
    _, ema, history = train(config, recipe, train_images, log_every=max(args.steps // 4, 1))
    train_seconds = time.time() - start
    sandwich = evaluate_real(config, ema, val, args.lmbda)

    def plain(q: int) -> dict:
        rows = []
        for o in originals:
            data = jpeg_encode(o, q)
            dec = jpeg_decode(data)
            mse = float(np.mean((o.astype(np.float64) - dec) ** 2)) / 255.0 ** 2
            bpp = 8.0 * len(data) / (o.shape[0] * o.shape[1])
            rows.append({"loss": args.lmbda * 255.0 ** 2 * mse + bpp, "bpp": bpp, "psnr": psnr(o, dec)})
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"quality": q}

    plains = [plain(q) for q in range(1, 101)]
    best = min(plains, key=lambda r: r["loss"])
    summary = {"config": {"widths": args.widths, "quality": args.quality}, "lambda": args.lmbda,
               "steps": args.steps, "batch_size": args.batch_size, "train_seconds": train_seconds,
               "sandwich": sandwich, "jpeg_same_quality": plains[args.quality - 1], "jpeg_best_quality": best,
               "val": f"{len(val)} held-out photos, centre 192x192 crops", "seconds": time.time() - start}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    s, same = sandwich, plains[args.quality - 1]
    print(f"sandwich q{args.quality}: loss {s['loss']:.4f}, {s['bpp']:.3f} bpp, {s['psnr']:.2f} dB, "
          f"MS-SSIM {s['ms_ssim']:.4f} (proxy said {s['proxy_bpp']:.3f} bpp w/o header, {s['proxy_psnr']:.2f} dB)")
    print(f"JPEG q{args.quality}:     loss {same['loss']:.4f}, {same['bpp']:.3f} bpp, {same['psnr']:.2f} dB")
    print(f"JPEG best q{best['quality']}: loss {best['loss']:.4f}, {best['bpp']:.3f} bpp, {best['psnr']:.2f} dB")
    print(f"train {train_seconds:.1f} s, total {time.time() - start:.1f} s")
    write_provenance(out.parent, time.time() - start, " ".join(["python"] + sys.argv), args=vars(args))


if __name__ == "__main__":
    main()
