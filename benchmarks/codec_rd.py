"""Rate-distortion benchmark of the learned codec against JPEG on Kodak.

One command regenerates ``results/codec/``::

    python benchmarks/codec_rd.py                 # RD curves, bitstreams, BD-rate, plot
    python benchmarks/codec_rd.py --stability     # + ranking stability of the proxy

What it does:
1. trains the default hyperprior (N=128, M=192) with ``SMALL_CPU_RECIPE`` on crops of
   ``../shared/data/photos`` at each ``--lambdas`` value (never on Kodak);
2. codes all 24 Kodak images (downscaled by ``--kodak-downscale``, Lanczos, for CPU time)
   into real bitstreams with ``constriction``, decodes them, checks the decode is
   bit-exact, and records real bpp, the model's estimated bpp, PSNR, encode/decode time;
3. codes the same images with Pillow JPEG at several qualities;
4. BD-rate against JPEG (``bjontegaard``, PCHIP), decoder GMACs, plot, summary.md,
   provenance.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path

# Two host devices: data-parallel training uses both cores (DESIGN.md: 2.3-2.5x).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
import jax  # noqa: E402
import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OUT = REPO / "results" / "codec"
JPEG_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 75, 90)
# CompressAI's published Kodak points (DESIGN.md), full-resolution Kodak.
REFERENCE_POINTS = [("CompressAI factorized q3", 0.288, 29.62), ("CompressAI hyperprior q3", 0.320, 30.97),
                    ("Pillow JPEG (DESIGN.md)", 0.508, 29.04)]


def markdown_table(df: pd.DataFrame, fmt: str = ".4g") -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    cell = lambda v: format(v, fmt) if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def load_kodak(downscale: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for p in sorted((SHARED / "data" / "kodak").glob("kodim*.png")):
        im = Image.open(p).convert("RGB")
        if downscale > 1:
            im = im.resize((im.width // downscale, im.height // downscale), Image.LANCZOS)
        out.append((p.stem, np.asarray(im)))
    return out


def jpeg_points(images) -> pd.DataFrame:
    rows = []
    for q in JPEG_QUALITIES:
        for name, im in images:
            buf = io.BytesIO()
            t = time.perf_counter()
            Image.fromarray(im).save(buf, format="JPEG", quality=q)
            enc = time.perf_counter() - t
            t = time.perf_counter()
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            dec_s = time.perf_counter() - t
            rows.append({"method": "JPEG (Pillow)", "setting": q, "image": name,
                         "bpp_real": 8 * len(buf.getvalue()) / (im.shape[0] * im.shape[1]),
                         "bpp_est": np.nan, "psnr": psnr(im, dec), "encode_s": enc, "decode_s": dec_s,
                         "bit_exact": True})
    return pd.DataFrame(rows)


def codec_points(label, config, params, images, lmbda) -> pd.DataFrame:
    from layernas.trainers.codec_bitstream import BitstreamCodec
    from layernas.trainers.codec_model import pad_to_multiple
    from layernas.trainers.codec_train import evaluate

    coder = BitstreamCodec(config, params)
    shapes_seen = set()
    rows = []
    for name, im in images:
        if im.shape not in shapes_seen:  # compile for this shape outside the timing
            data, _ = coder.compress(im)
            coder.decompress(data)
            shapes_seen.add(im.shape)
        x = pad_to_multiple(im.astype(np.float32) / 255.0)[None]
        est = evaluate(config, params, x, lmbda)
        t = time.perf_counter()
        data, x_hat = coder.compress(im)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        dec = coder.decompress(data)
        dec_s = time.perf_counter() - t
        rec = np.clip(np.round(dec * 255.0), 0, 255).astype(np.uint8)
        rows.append({"method": label, "setting": lmbda, "image": name,
                     "bpp_real": 8 * len(data) / (im.shape[0] * im.shape[1]),
                     # estimated bits are for the padded image; normalise by the real pixels
                     "bpp_est": est["bpp"] * x.shape[1] * x.shape[2] / (im.shape[0] * im.shape[1]),
                     "psnr": psnr(im, rec), "encode_s": enc, "decode_s": dec_s,
                     "bit_exact": bool(np.array_equal(dec, x_hat))})
    return pd.DataFrame(rows)


def bd_rates(curves: pd.DataFrame, anchor: str) -> dict[str, float]:
    import bjontegaard as bd

    a = curves[curves.method == anchor].sort_values("bpp_real")
    out = {}
    for method, c in curves.groupby("method"):
        if method == anchor:
            continue
        c = c.sort_values("bpp_real")
        try:
            out[method] = float(bd.bd_rate(a.bpp_real.values, a.psnr.values, c.bpp_real.values, c.psnr.values,
                                           method="pchip", require_matching_points=False, min_overlap=0.0))
        except Exception as e:  # no PSNR overlap: say so instead of inventing a number
            print(f"BD-rate {method} vs {anchor}: {e}", file=sys.stderr)
            out[method] = float("nan")
    return out


def run_rd(args) -> None:
    from layernas.search_spaces.codec import CodecHyperpriorSpace
    from layernas.trainers.codec_train import SMALL_CPU_RECIPE, load_images, split_photos, train

    space = CodecHyperpriorSpace()
    arch = space.default_arch()
    config = space.config(arch)
    train_imgs, _ = split_photos(load_images(SHARED / "data" / "photos"))
    kodak = load_kodak(args.kodak_downscale)[: args.max_images]
    frames, train_rows = [jpeg_points(kodak)], []
    for lmbda in args.lambdas:
        cfg = dataclasses.replace(SMALL_CPU_RECIPE, lmbda=lmbda, steps=args.steps)
        t = time.time()
        _, ema, hist = train(config, cfg, train_imgs, log_every=25, data_parallel=min(2, len(jax.devices())))
        train_rows.append({"lmbda": lmbda, "steps": cfg.steps, "train_seconds": time.time() - t,
                           "first_loss": hist[0]["loss"], "last_loss": float(np.mean([h["loss"] for h in hist[-10:]]))})
        print(f"lambda {lmbda}: trained in {time.time() - t:.0f}s", flush=True)
        frames.append(codec_points("hyperprior N128 M192 (small CPU recipe)", config, ema, kodak, lmbda))
        pd.concat(frames).to_csv(OUT / "rd_per_image.csv", index=False)
    pd.DataFrame(train_rows).to_csv(OUT / "training.csv", index=False)
    costs = space.cost(arch)
    pd.DataFrame([{"model": "hyperprior N128 M192 (default arch)", "arch": space.arch_to_str(arch), **costs}]).to_csv(
        OUT / "decoder_cost.csv", index=False)


def run_stability(args) -> None:
    """Rank a few architectures with the search's proxy under two seeds."""
    from scipy.stats import kendalltau, spearmanr

    from layernas.evaluator import Trial
    from layernas.search_spaces.codec import CodecHyperpriorSpace
    from layernas.trainers.codec_train import PROXY_RECIPE, CodecEvaluator

    space = CodecHyperpriorSpace()
    d = list(space.default_arch())
    idx = {l.name: i for i, l in enumerate(space.layers)}

    def variant(**changes):
        a = list(d)
        for k, v in changes.items():
            a[idx[k]] = space.layers[idx[k]].options.index(v)
        return tuple(a)

    archs = [tuple(d), variant(gs0_width=32, gs1_width=32, gs2_width=32),
             variant(gs2_act="leaky_relu", gs1_act="leaky_relu", gs0_act="leaky_relu"),
             variant(M=64), variant(gs2_up="resize", gs2_kernel=3), variant(gs1_width=64, gs2_width=64, gs2_act="gdn_lite")]
    archs = archs[: args.stability_archs]
    rows = []
    for seed in args.stability_seeds:
        ev = CodecEvaluator(space, lmbda=args.search_lambda, recipe=PROXY_RECIPE,
                            photos_dir=SHARED / "data" / "photos", width_scale=args.width_scale, seed=seed,
                            val_crop=128)
        for i, a in enumerate(archs):
            r = ev.evaluate(Trial(i, a, seed))
            rows.append({"seed": seed, "arch": space.arch_to_str(a), "reward": r.reward,
                         "decoder_madds": space.cost(a)["decoder_madds"], "seconds": r.cost_seconds,
                         **{k: r.info.get(k) for k in ("val_bpp", "val_psnr")}})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    (OUT / "stability").mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT / "stability" / "stability.csv", index=False)
    piv = df.pivot(index="arch", columns="seed", values="reward")
    s = piv.columns
    corr = {"spearman": float(spearmanr(piv[s[0]], piv[s[1]]).statistic),
            "kendall": float(kendalltau(piv[s[0]], piv[s[1]]).statistic),
            "seeds": [int(x) for x in s], "archs": len(piv)}
    (OUT / "stability" / "stability.json").write_text(json.dumps(corr, indent=2) + "\n")


def write_summary(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = pd.read_csv(OUT / "rd_per_image.csv")
    curves = per.groupby(["method", "setting"], as_index=False).agg(
        bpp_real=("bpp_real", "mean"), bpp_est=("bpp_est", "mean"), psnr=("psnr", "mean"),
        encode_s=("encode_s", "mean"), decode_s=("decode_s", "mean"), bit_exact=("bit_exact", "all"),
        images=("image", "count"))
    curves.to_csv(OUT / "rd_curves.csv", index=False)
    bd = bd_rates(curves, "JPEG (Pillow)")
    cost = pd.read_csv(OUT / "decoder_cost.csv")
    cost["bd_rate_vs_jpeg_pct"] = [bd.get("hyperprior N128 M192 (small CPU recipe)", np.nan)] * len(cost)
    cost.to_csv(OUT / "decoder_cost.csv", index=False)

    fig, ax = plt.subplots(figsize=(7, 5))
    for method, c in curves.groupby("method"):
        c = c.sort_values("bpp_real")
        ax.plot(c.bpp_real, c.psnr, "o-", label=f"{method} (ours, Kodak /{args.kodak_downscale})"
                if "JPEG" not in method else f"{method}, Kodak /{args.kodak_downscale}")
    for label, b, p in REFERENCE_POINTS:
        ax.plot([b], [p], "*", ms=12, label=f"{label} (published, full-res Kodak)")
    ax.set_xlabel("bits per pixel"), ax.set_ylabel("PSNR (dB, RGB)"), ax.grid(alpha=0.3)
    ax.set_xlim(0, max(2.0, 1.05 * float(curves.bpp_real.max())))
    ax.legend(fontsize=7)
    ax.set_title("Kodak (24 images) rate-distortion")
    fig.tight_layout()
    fig.savefig(OUT / "rd_kodak.png", dpi=120)

    ours = curves[curves.method != "JPEG (Pillow)"]
    steps = (int(pd.read_csv(OUT / "training.csv").steps.iloc[0]) if (OUT / "training.csv").exists()
             else args.steps)
    lines = ["# Codec rate-distortion on Kodak", "",
             "Made by `benchmarks/codec_rd.py` (the RD run's command is in provenance.json, the stability "
             f"run's in stability/provenance.json). Kodak: all {per.image.nunique()} images, "
             f"downscaled by {args.kodak_downscale} (Lanczos) for CPU time, so the numbers are not comparable "
             "one-to-one with the published full-resolution points (shown as markers).", "",
             "Our codec is the default hyperprior (N=128, M=192) trained with the *small CPU recipe* "
             f"({steps} Adam steps, batch 4, 64x64 crops of ../shared/data/photos). Published models train "
             "for ~1M steps; this run shows the pipeline (real bitstreams, bit-exact decode), not a competitive codec.",
             "", "## RD points (means over images)", "", markdown_table(curves), "",
             "## BD-rate against Pillow JPEG (bjontegaard, PCHIP; negative = fewer bits than JPEG)", ""]
    for m, v in bd.items():
        if np.isfinite(v):
            lines.append(f"- {m}: {v:.2f} %")
        else:
            c = curves[curves.method == m]
            j = curves[curves.method == "JPEG (Pillow)"]
            lines.append(f"- {m}: not computable: its PSNR range {c.psnr.min():.2f}-{c.psnr.max():.2f} dB does not "
                         f"overlap JPEG's {j.psnr.min():.2f}-{j.psnr.max():.2f} dB (every JPEG point dominates it)")
    lines += ["", "## Decoder cost", "", markdown_table(cost, ".6g"), "",
              "## Real vs estimated bpp (ours)", ""]
    for _, r in ours.iterrows():
        lines.append(f"- lambda {r.setting}: real {r.bpp_real:.4f} bpp, estimated {r.bpp_est:.4f} bpp "
                     f"({100 * (r.bpp_real / r.bpp_est - 1):+.2f} %), bit-exact decode: {bool(r.bit_exact)}, "
                     f"encode {r.encode_s:.2f} s, decode {r.decode_s:.2f} s per image")
    if (OUT / "training.csv").exists():
        lines += ["", "## Training (small CPU recipe)", "", markdown_table(pd.read_csv(OUT / "training.csv")), ""]
    if (OUT / "stability" / "stability.json").exists():
        st = json.loads((OUT / "stability" / "stability.json").read_text())
        lines += ["", "## Ranking stability of the search proxy", "",
                  f"{st['archs']} architectures, proxy recipe at width scale {args.width_scale}, seeds {st['seeds']}: "
                  f"Spearman {st['spearman']:.3f}, Kendall {st['kendall']:.3f} (see stability/).", ""]
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0035, 0.0067, 0.0130, 0.0250])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--kodak-downscale", type=int, default=2)
    p.add_argument("--max-images", type=int, default=24)
    p.add_argument("--stability", action="store_true", help="also measure the proxy's ranking stability")
    p.add_argument("--stability-only", action="store_true")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--stability-seeds", type=int, nargs=2, default=[0, 1])
    p.add_argument("--stability-archs", type=int, default=6)
    p.add_argument("--width-scale", type=float, default=0.25)
    p.add_argument("--search-lambda", type=float, default=0.0130)
    args = p.parse_args(argv)
    jax.config.update("jax_compilation_cache_dir", str(REPO / ".cache" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    OUT.mkdir(parents=True, exist_ok=True)
    from layernas.provenance import write_provenance

    command = " ".join(["python"] + sys.argv)
    if not (args.summary_only or args.stability_only):
        start = time.time()
        run_rd(args)
        write_provenance(OUT, time.time() - start, command, args=vars(args))
    if args.stability or args.stability_only:
        start = time.time()
        run_stability(args)
        write_provenance(OUT / "stability", time.time() - start, command, args=vars(args))
    write_summary(args)


if __name__ == "__main__":
    main()
