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

# Two host devices: data-parallel training uses both cores (one XLA:CPU device does not keep 2 busy).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
import jax  # noqa: E402
import numpy as np
import pandas as pd
from PIL import Image

from layernas.trainers.image_quality import ms_ssim, ms_ssim_db, psnr

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))  # the project's data folder
OUT = REPO / "results" / "codec"
JPEG_QUALITIES = (1, 3, 5, 10, 20, 30, 40, 50, 60, 75, 90)
# CompressAI's published Kodak points (github.com/InterDigitalInc/CompressAI, results/kodak/),
# full-resolution Kodak.
REFERENCE_CSV = REPO / "benchmarks" / "reference" / "compressai_kodak.csv"
JPEG = "JPEG (Pillow)"


def markdown_table(df: pd.DataFrame, fmt: str = ".4g") -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    cell = lambda v: format(v, fmt) if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def load_kodak(downscale: int, directory: Path) -> list[tuple[str, np.ndarray]]:
    """The Kodak images ``directory/kodim*.png`` (downscaled), as (name, HxWx3 uint8) pairs."""
    out = []
    paths = sorted(Path(directory).glob("kodim*.png"))
    if not paths:
        raise SystemExit(f"--kodak {directory}: no kodim*.png files (the Kodak Lossless True Color Image Suite, "
                         f"see docs/data.md)")
    for p in paths:
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
                         "bpp_est": np.nan, "psnr": psnr(im, dec), "ms_ssim": ms_ssim(im, dec), "encode_s": enc, "decode_s": dec_s,
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
                     "psnr": psnr(im, rec), "ms_ssim": ms_ssim(im, rec), "encode_s": enc, "decode_s": dec_s,
                     "bit_exact": bool(np.array_equal(dec, x_hat))})
    return pd.DataFrame(rows)


def monotone_points(curve: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list]:
    """The points of one RD curve that a BD-rate can use, and the settings it drops.

    Sorted by rate, a point is kept only if its quality beats every cheaper point: a point
    that costs more bits for less quality (an under-trained model does this) would make the
    quality-to-rate interpolation non-monotone. Dropped points stay in every table and plot.
    """
    c = curve.sort_values("bpp_real").reset_index(drop=True)
    keep = c[metric].to_numpy() > np.maximum.accumulate(np.r_[-np.inf, c[metric].to_numpy()[:-1]])
    return c[keep], list(c.setting[~keep])


MIN_BD_RANGE = 1.0  # dB: a BD-rate integrates log-rate over at least this much shared quality


def bd_rates(curves: pd.DataFrame, anchor: str, metric: str = "psnr", notes: dict | None = None,
             min_range: float = MIN_BD_RANGE) -> dict[str, float]:
    """BD-rate (%) of every other method against ``anchor`` on ``metric`` (bjontegaard, PCHIP).

    Args:
      curves: one row per (method, setting) with ``bpp_real`` and ``metric``.
      anchor: the method every other is compared with.
      metric: the quality column ("psnr" or "ms_ssim_db").
      notes: if given, filled with ``{method: text}`` saying which points were dropped (see
        :func:`monotone_points`) and the quality range the BD-rate integrates over.
      min_range: the least shared quality range (dB) worth integrating over; a narrower one
        gives NaN (a curve that is nearly flat in quality has no meaningful average).
    Returns:
      ``{method: BD-rate %}``; a method whose quality range does not overlap the anchor's
      gets NaN (printed), never a made-up number.
    """
    import bjontegaard as bd

    a, _ = monotone_points(curves[curves.method == anchor], metric)
    out = {}
    for method, c in curves.groupby("method"):
        if method == anchor:
            continue
        c, dropped = monotone_points(c, metric)
        lo, hi = max(a[metric].min(), c[metric].min()), min(a[metric].max(), c[metric].max())
        try:
            if len(c) < 2 or hi <= lo:
                raise ValueError(f"no {metric} overlap with {anchor} over 2+ points")
            if hi - lo < min_range:
                raise ValueError(f"{metric} overlap {lo:.2f}..{hi:.2f} is narrower than {min_range} dB")
            out[method] = float(bd.bd_rate(a.bpp_real.values, a[metric].values, c.bpp_real.values, c[metric].values,
                                           method="pchip", require_matching_points=False, min_overlap=0.0))
        except Exception as e:  # no overlap: say so instead of inventing a number
            print(f"BD-rate ({metric}) {method} vs {anchor}: {e}", file=sys.stderr)
            out[method] = float("nan")
        if notes is not None:
            span = (f"over {metric} {lo:.2f}..{hi:.2f}" if hi - lo >= min_range else
                    f"overlap {lo:.2f}..{hi:.2f} narrower than {min_range} dB: not computed" if hi > lo else "no overlap")
            notes[method] = span + (
                f"; dropped settings {dropped} (more bits, less quality than a cheaper point)" if dropped else "")
    return out


def rate_vs_anchor(curves: pd.DataFrame, anchor: str, metric: str = "psnr") -> pd.DataFrame:
    """Per point: the bits the anchor needs for the same quality, and our rate difference.

    The anchor's log-rate is interpolated against quality with PCHIP (as the BD-rate does) on
    its monotone points; points outside the anchor's quality range get NaN.

    Returns:
      one row per non-anchor (method, setting): ``metric``, ``bpp_real``, ``anchor_bpp`` and
      ``rate_vs_anchor_pct`` = 100 * (bpp_real / anchor_bpp - 1).
    """
    from scipy.interpolate import PchipInterpolator

    a, _ = monotone_points(curves[curves.method == anchor], metric)
    log_rate = PchipInterpolator(a[metric].to_numpy(), np.log(a.bpp_real.to_numpy()), extrapolate=False)
    rows = curves[curves.method != anchor][["method", "setting", metric, "bpp_real"]].copy()
    rows["anchor_bpp"] = np.exp(log_rate(rows[metric].to_numpy()))
    rows["rate_vs_anchor_pct"] = 100 * (rows.bpp_real / rows.anchor_bpp - 1)
    return rows.reset_index(drop=True)


def load_reference_points() -> pd.DataFrame:
    """CompressAI's published full-resolution Kodak points, as curves like ours."""
    ref = pd.read_csv(REFERENCE_CSV, comment="#")
    return ref.rename(columns={"model": "method", "quality": "setting", "bpp": "bpp_real"}).assign(
        ms_ssim_db=lambda d: [ms_ssim_db(v) for v in d.ms_ssim])


CACHE = REPO / ".cache" / "codec_rd"
SEARCH_RESULT = OUT / "search" / "result.json"


def rd_models(space) -> dict[str, tuple[int, ...]]:
    """The codecs on the RD plot: the default hyperprior and the search's best architecture."""
    models = {"default hyperprior (N=128, M=192)": tuple(space.default_arch())}
    if SEARCH_RESULT.exists():
        models["LayerNAS-searched"] = tuple(json.loads(SEARCH_RESULT.read_text())["best"]["arch"])
    else:
        print(f"no {SEARCH_RESULT}: run benchmarks/codec_search.py first; only the default is trained",
              file=sys.stderr)
    return models


def train_ladder(space, arch, lambdas, train_imgs, args):
    """Train the highest lambda from scratch, then fine-tune each lower one from the previous.

    Every trained model is saved under ``.cache/codec_rd/`` keyed by the architecture, the
    recipe and its parent, so an interrupted run resumes without retraining.

    Returns:
      [(lmbda, ema_params, training_row)] in the order of ``lambdas`` (highest first).
    """
    import hashlib

    from flax import serialization

    from layernas.trainers.codec_model import init_params
    from layernas.trainers.codec_train import CPU_RD_FINETUNE, CPU_RD_RECIPE, train

    config = space.config(arch)
    CACHE.mkdir(parents=True, exist_ok=True)
    out, parent, parent_key = [], None, "scratch"
    for i, lmbda in enumerate(sorted(lambdas, reverse=True)):
        base = CPU_RD_RECIPE if i == 0 else CPU_RD_FINETUNE
        cfg = dataclasses.replace(base, lmbda=lmbda, steps=args.steps if i == 0 else args.finetune_steps)
        key = hashlib.sha256(repr((space.arch_to_str(arch), cfg, parent_key)).encode()).hexdigest()[:16]
        path, meta = CACHE / f"{key}.msgpack", CACHE / f"{key}.json"
        if path.exists() and meta.exists():
            template = init_params(config, 0)
            ema = serialization.from_bytes(template, path.read_bytes())
            row = json.loads(meta.read_text())
            print(f"  lambda {lmbda}: reusing {path.name} (trained in {row['train_seconds']:.0f}s)", flush=True)
        else:
            t = time.time()
            _, ema, hist = train(config, cfg, train_imgs, log_every=100,
                                 data_parallel=min(2, len(jax.devices())), initial_params=parent)
            ema = jax.device_get(ema)
            row = {"lmbda": lmbda, "steps": cfg.steps, "init": "scratch" if parent is None else "fine-tuned",
                   "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size, "crop": cfg.crop_size,
                   "train_seconds": time.time() - t, "first_loss": hist[0]["loss"],
                   "last_loss": float(np.mean([h["loss"] for h in hist[-50:]])),
                   "last_train_psnr": float(np.mean([h["psnr"] for h in hist[-50:]])),
                   "last_train_bpp": float(np.mean([h["bpp"] for h in hist[-50:]]))}
            path.write_bytes(serialization.to_bytes(ema))
            meta.write_text(json.dumps(row, indent=1))
            print(f"  lambda {lmbda}: trained {cfg.steps} steps in {row['train_seconds']:.0f}s "
                  f"(train psnr {row['last_train_psnr']:.2f}, bpp {row['last_train_bpp']:.3f})", flush=True)
        out.append((lmbda, ema, {**row, "key": key}))
        parent, parent_key = ema, key
    return out


def run_rd(args) -> None:
    from layernas.search_spaces.codec import CodecHyperpriorSpace
    from layernas.trainers.codec_train import load_images, split_photos

    space = CodecHyperpriorSpace()
    train_imgs, _ = split_photos(load_images(args.photos))
    models = {label: arch for label, arch in rd_models(space).items()
              if args.models is None or any(label.startswith(m) for m in args.models)}
    trained = {}
    for label, arch in models.items():  # train everything first: evaluation is cheap to redo
        print(f"training {label}: {space.arch_to_str(arch)}", flush=True)
        trained[label] = train_ladder(space, arch, args.lambdas, train_imgs, args)
    if args.train_only:
        return
    kodak = load_kodak(args.kodak_downscale, args.kodak)[: args.max_images]
    frames, train_rows, cost_rows = [jpeg_points(kodak)], [], []
    for label, arch in models.items():
        config = space.config(arch)
        for lmbda, ema, row in trained[label]:
            # evaluations are cached beside the model: a rerun (or a run for other models)
            # reuses them; the key names the model, the Kodak scale and the image count
            cached = CACHE / f"{row['key']}-kodak{args.kodak_downscale}-{len(kodak)}.csv"
            if cached.exists():
                points = pd.read_csv(cached).assign(method=label)
                print(f"{label} lambda {lmbda}: reusing {cached.name}", flush=True)
            else:
                points = codec_points(label, config, ema, kodak, lmbda)
                points.to_csv(cached, index=False)
                print(f"{label} lambda {lmbda}: evaluated on {len(kodak)} Kodak images", flush=True)
            frames.append(points)
            train_rows.append({"model": label, **{k: v for k, v in row.items() if k != "key"}})
            pd.concat(frames).to_csv(OUT / "rd_per_image.csv", index=False)
        cost_rows.append({"model": label, "arch": space.arch_to_str(arch), **space.cost(arch)})
    pd.DataFrame(train_rows).to_csv(OUT / "training.csv", index=False)
    pd.DataFrame(cost_rows).to_csv(OUT / "decoder_cost.csv", index=False)


def stability_dir(args) -> Path:
    """``stability/`` for the default proxy length, ``stability_steps{N}/`` for another."""
    from layernas.trainers.codec_train import PROXY_RECIPE

    steps = args.stability_steps or PROXY_RECIPE.steps
    return OUT / ("stability" if steps == PROXY_RECIPE.steps else f"stability_steps{steps}")


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
        recipe = dataclasses.replace(PROXY_RECIPE, steps=args.stability_steps or PROXY_RECIPE.steps)
        ev = CodecEvaluator(space, lmbda=args.search_lambda, recipe=recipe,
                            photos_dir=args.photos, width_scale=args.width_scale, seed=seed,
                            val_crop=128)
        for i, a in enumerate(archs):
            r = ev.evaluate(Trial(i, a, seed))
            rows.append({"seed": seed, "arch": space.arch_to_str(a), "reward": r.reward,
                         "decoder_madds": space.cost(a)["decoder_madds"], "seconds": r.cost_seconds,
                         **{k: r.info.get(k) for k in ("val_bpp", "val_psnr")}})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    out = stability_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "stability.csv", index=False)
    piv = df.pivot(index="arch", columns="seed", values="reward")
    s = piv.columns
    corr = {"spearman": float(spearmanr(piv[s[0]], piv[s[1]]).statistic),
            "kendall": float(kendalltau(piv[s[0]], piv[s[1]]).statistic),
            "seeds": [int(x) for x in s], "archs": len(piv), "width_scale": args.width_scale,
            "proxy_steps": recipe.steps, "lmbda": args.search_lambda}
    (out / "stability.json").write_text(json.dumps(corr, indent=2) + "\n")


def write_summary(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = pd.read_csv(OUT / "rd_per_image.csv")
    per["ms_ssim_db"] = [ms_ssim_db(v) for v in per.ms_ssim]
    curves = per.groupby(["method", "setting"], as_index=False).agg(
        bpp_real=("bpp_real", "mean"), bpp_est=("bpp_est", "mean"), psnr=("psnr", "mean"),
        ms_ssim=("ms_ssim", "mean"), ms_ssim_db=("ms_ssim_db", "mean"),
        encode_s=("encode_s", "mean"), decode_s=("decode_s", "mean"), bit_exact=("bit_exact", "all"),
        images=("image", "count"))
    curves.to_csv(OUT / "rd_curves.csv", index=False)
    full_res = args.kodak_downscale == 1
    ref = load_reference_points()
    both = pd.concat([curves, ref]) if full_res else curves
    notes_psnr, notes_msssim = {}, {}
    bd_psnr = bd_rates(both, JPEG, "psnr", notes_psnr)
    bd_msssim = bd_rates(both, JPEG, "ms_ssim_db", notes_msssim)
    ours = curves[curves.method != JPEG]
    cost = pd.read_csv(OUT / "decoder_cost.csv")
    times = ours.groupby("method")[["encode_s", "decode_s"]].mean()
    cost["bd_rate_psnr_vs_jpeg_pct"] = [bd_psnr.get(m, np.nan) for m in cost.model]
    cost["bd_rate_msssim_vs_jpeg_pct"] = [bd_msssim.get(m, np.nan) for m in cost.model]
    cost["encode_s_per_image"] = [times.encode_s.get(m, np.nan) for m in cost.model]
    cost["decode_s_per_image"] = [times.decode_s.get(m, np.nan) for m in cost.model]
    cost.to_csv(OUT / "decoder_cost.csv", index=False)

    where = "full-resolution Kodak" if full_res else f"Kodak downscaled /{args.kodak_downscale}"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8))
    for ax, metric, ylabel in [(axes[0], "psnr", "PSNR (dB, RGB)"), (axes[1], "ms_ssim_db", "MS-SSIM (dB)")]:
        for i, (method, c) in enumerate(curves.groupby("method")):
            # a curve joins only the points that beat every cheaper one; a dominated point (more
            # bits for less quality) is a marker alone, so no line pretends it is on the curve
            kept, dropped = monotone_points(c, metric)
            color = f"C{i}"
            ax.plot(kept.bpp_real, kept[metric], "s--" if method == JPEG else "o-", color=color,
                    label=f"{method}, {where}")
            lone = c[c.setting.isin(dropped)]
            if len(lone):
                ax.plot(lone.bpp_real, lone[metric], "s" if method == JPEG else "o", color=color, mfc="none",
                        ms=8, ls="none", label=f"{method}: dominated setting (more bits, less quality)")
        for j, (method, c) in enumerate(ref.groupby("method"), start=curves.method.nunique()):
            ax.plot(c.bpp_real, c[metric], "*:", color=f"C{j}", ms=9, alpha=0.8,
                    label=f"{method} (published, full-res Kodak)")
        ax.set_xlabel("bits per pixel (real bitstream)"), ax.set_ylabel(ylabel), ax.grid(alpha=0.3)
        ax.set_xlim(0, min(2.5, 1.05 * float(curves.bpp_real.max())))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)  # below: covers no point
    fig.suptitle(f"Rate-distortion on {where} (24 images)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(OUT / "rd_kodak.png", dpi=120)

    from layernas.trainers.codec_train import CPU_RD_RECIPE

    training = pd.read_csv(OUT / "training.csv") if (OUT / "training.csv").exists() else None
    trained_steps = ""
    if training is not None and "model" in training:
        per_model = training.groupby("model").agg(steps=("steps", "sum"), seconds=("train_seconds", "sum"))
        trained_steps = "Optimizer steps per model, all lambdas: " + ", ".join(
            f"{m} {int(r.steps)} ({r.seconds / 60:.0f} min)" for m, r in per_model.iterrows()) + "."
    lines = ["# Codec rate-distortion on Kodak", "",
             "Made by `benchmarks/codec_rd.py` (command, machine and wall time in provenance.json; the training "
             "run's, when it was a separate `--train-only` run, in provenance_training.json; the stability "
             f"run's in stability/provenance.json). Kodak: all {per.image.nunique()} images, {where}; "
             "nothing is trained on Kodak (training crops come from the training photos, minus the 8 held-out "
             "photos).", "",
             f"Our codecs are trained with the *CPU RD recipe* (`CPU_RD_RECIPE` in "
             f"layernas/trainers/codec_train.py): the highest lambda from scratch, then each lower lambda "
             f"fine-tuned from the previous one (`CPU_RD_FINETUNE`); batch {CPU_RD_RECIPE.batch_size} of "
             f"{CPU_RD_RECIPE.crop_size}x{CPU_RD_RECIPE.crop_size} crops, Adam with warm-up and cosine decay, "
             f"EMA weights for evaluation. {trained_steps} That is a small fraction of the ~1M steps published "
             "models train for, so the gap to CompressAI's markers is mostly training, not architecture.", "",
             "## Decoder cost against BD-rate", "",
             "BD-rate against Pillow JPEG (bjontegaard, PCHIP; negative = fewer bits than JPEG for the same "
             "quality); MS-SSIM in dB (-10 log10(1 - MS-SSIM)). Times are per image on this machine (see "
             "provenance.json), one process, entropy coding included.", "",
             markdown_table(cost.drop(columns=["arch"]), ".5g"), "",
             "Architectures:", ""] + [f"- {r.model}: `{r.arch}`" for r in cost.itertuples()] + [
             "", "## BD-rate against JPEG, every method", "",
             "| method | BD-rate PSNR (%) | BD-rate MS-SSIM (%) | PSNR points used | MS-SSIM points used |",
             "|---|---|---|---|---|"]
    for m in bd_psnr:
        lines.append(f"| {m} | {bd_psnr[m]:.2f} | {bd_msssim.get(m, np.nan):.2f} | {notes_psnr.get(m, '')} | "
                     f"{notes_msssim.get(m, '')} |")
    lines += ["", f"A BD-rate needs the curves to share at least {MIN_BD_RANGE} dB of quality; where they do "
              "not (a curve nearly flat in quality), the cell is nan and the per-point comparison below says "
              "more.", "", "## Rate against JPEG at the same quality, per point", "",
              "JPEG's bits for the same PSNR / MS-SSIM (PCHIP on JPEG's log-rate, as the BD-rate uses); "
              "positive = we spend more bits than JPEG.", ""]
    per_point = rate_vs_anchor(curves, JPEG, "psnr").merge(
        rate_vs_anchor(curves, JPEG, "ms_ssim_db"), on=["method", "setting", "bpp_real"],
        suffixes=("_psnr", "_msssim"))
    per_point = per_point.rename(columns={"anchor_bpp_psnr": "jpeg_bpp_same_psnr",
                                          "rate_vs_anchor_pct_psnr": "rate_vs_jpeg_psnr_pct",
                                          "anchor_bpp_msssim": "jpeg_bpp_same_msssim",
                                          "rate_vs_anchor_pct_msssim": "rate_vs_jpeg_msssim_pct"})
    per_point.to_csv(OUT / "rate_vs_jpeg.csv", index=False)
    lines.append(markdown_table(per_point[per_point.method.isin(ours.method)]))
    if not full_res:
        lines.append("\nCompressAI's points are full-resolution Kodak, so no BD-rate is computed against them here.")
    lines += ["", "## RD points (means over images)", "", markdown_table(curves), "",
              "## Real against estimated bpp (ours)", ""]
    for r in ours.itertuples():
        lines.append(f"- {r.method}, lambda {r.setting}: real {r.bpp_real:.4f} bpp, estimated {r.bpp_est:.4f} bpp "
                     f"({100 * (r.bpp_real / r.bpp_est - 1):+.2f} %), bit-exact decode: {bool(r.bit_exact)}")
    if training is not None:
        lines += ["", "## Training", "", markdown_table(training), ""]
    stability = sorted(OUT.glob("stability*/stability.json"))
    if stability:
        lines += ["", "## Ranking stability of the search proxy", ""]
    for path in stability:
        st = json.loads(path.read_text())
        lines.append(f"- {st['archs']} architectures, proxy at width scale {st.get('width_scale', args.width_scale)} "
                     f"with {st.get('proxy_steps', '?')} steps, seeds {st['seeds']}: Spearman {st['spearman']:.3f}, "
                     f"Kendall {st['kendall']:.3f} (see {path.parent.name}/).")
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0067, 0.0130, 0.0250, 0.0483])
    p.add_argument("--steps", type=int, default=1600, help="steps of the highest lambda (from scratch)")
    p.add_argument("--finetune-steps", type=int, default=500, help="steps of each lower lambda (fine-tuned)")
    p.add_argument("--train-only", action="store_true", help="train (or reuse) the models, evaluate nothing")
    p.add_argument("--models", nargs="+", choices=["default", "LayerNAS"],
                   help="only these models (labels starting with these words; default: all)")
    p.add_argument("--kodak-downscale", type=int, default=1, help="1 = full resolution (768x512)")
    p.add_argument("--max-images", type=int, default=24)
    p.add_argument("--stability", action="store_true", help="also measure the proxy's ranking stability")
    p.add_argument("--stability-only", action="store_true")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--stability-seeds", type=int, nargs=2, default=[0, 1])
    p.add_argument("--stability-archs", type=int, default=6)
    p.add_argument("--stability-steps", type=int, help="proxy steps (default PROXY_RECIPE.steps, 60)")
    p.add_argument("--width-scale", type=float, default=0.25)
    p.add_argument("--search-lambda", type=float, default=0.0130)
    p.add_argument("--photos", type=Path, default=SHARED / "data" / "photos",
                   help="training photos DIR/*.png (the last 8 are held out); default $LAYERNAS_SHARED/data/photos")
    p.add_argument("--kodak", type=Path, default=SHARED / "data" / "kodak",
                   help="Kodak images DIR/kodim01..24.png, final evaluation only; default $LAYERNAS_SHARED/data/kodak")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
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
        write_provenance(stability_dir(args), time.time() - start, command, args=vars(args))
    if not args.stability_only:
        write_summary(args)


if __name__ == "__main__":
    main()
