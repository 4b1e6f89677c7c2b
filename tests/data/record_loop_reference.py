"""Losses and metrics of tiny training runs on real data (fixed seeds): CIFAR-10 classifiers,
the hyperprior codec and the JPEG sandwich, on one device and data-parallel on two.

``loop_reference.json`` beside this file was written by this script (then importing
``codec_train.TrainConfig``) from the three separate training loops that the one loop of
``layernas.trainers.loop`` replaced (git commit 33c08a5); ``tests/test_loop.py`` runs the same
cases through the one loop and checks that they reproduce it. To rewrite the file (only
when a change of the numerics is intended), run with two host devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/data/record_loop_reference.py --write
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared")) / "data"
REFERENCE = Path(__file__).with_name("loop_reference.json")

from layernas.trainers import codec_train, data, nats_models, sandwich_train, train
from layernas.trainers.codec_model import CodecConfig
from layernas.trainers.sandwich_model import SandwichConfig


def tree_stats(tree) -> dict:
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
    return {"abs_sum": float(sum(np.abs(x).sum() for x in leaves)), "sum": float(sum(x.sum() for x in leaves))}


CLASSIFIER_CASES = {
    "sgd": dict(name="t", epochs=2, batch_size=32, learning_rate=0.1, weight_decay=0.0, nesterov=False,
                check_every=4, eval_batch_size=64),
    "sgd_nesterov_wd_warmup_smooth": dict(name="t", epochs=2, batch_size=32, learning_rate=0.1, weight_decay=5e-4,
                                          warmup_epochs=0.5, label_smoothing=0.1, check_every=3,
                                          eval_batch_size=64),
    "adamw_constant_noaug": dict(name="t", epochs=2, batch_size=32, optimizer="adamw", learning_rate=3e-3,
                                 weight_decay=1e-4, schedule="constant", augment=False, eval_batch_size=64),
}


def classifier_data():
    ds = data.load_image_folder(SHARED / "cifar10", "train", per_class=32)
    return data.split_validation(ds, per_class=6, seed=0)


def classifier(out):
    tr, va = classifier_data()
    model = nats_models.build_sss((8, 8, 8, 8, 8), tr.num_classes)
    for name, kw in CLASSIFIER_CASES.items():
        res = train.train_model(model, tr, va, train.Recipe(**kw), seed=3)
        out[f"classifier/{name}"] = {"history": res.history, "valid_accuracy": res.valid_accuracy,
                                     "valid_loss": res.valid_loss, "steps": res.steps,
                                     "variables": tree_stats(res.variables)}
    if len(jax.devices()) >= 2:
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
        res = train.train_model(model, tr, va, train.Recipe(**CLASSIFIER_CASES["sgd"]), seed=3, placement=mesh)
        out["classifier/sgd_mesh2"] = {"history": res.history, "valid_accuracy": res.valid_accuracy,
                                       "valid_loss": res.valid_loss, "steps": res.steps,
                                       "variables": tree_stats(res.variables)}


CODEC_RECIPE = dict(lmbda=0.01, steps=6, batch_size=2, crop_size=64, learning_rate=3e-3, warmup_steps=2,
                    ema_decay=0.9, seed=1)


def photos():
    tr, va = codec_train.split_photos(codec_train.load_images(SHARED / "photos"))
    return tr, codec_train.center_crops(va[:2], 64)


def codec(out):
    tr, va = photos()
    config = CodecConfig.small(width=8, latent=8)
    cfg = codec_train.codec_recipe(**CODEC_RECIPE)
    params, ema, hist = codec_train.train(config, cfg, tr)
    out["codec/scratch"] = {"history": hist, "eval_params": codec_train.evaluate(config, params, va, 0.01),
                            "eval_ema": codec_train.evaluate(config, ema, va, 0.01),
                            "params": tree_stats(params), "ema": tree_stats(ema)}
    tune = dataclasses.replace(cfg, lmbda=0.005, steps=3, learning_rate=1e-3)
    p2, e2, h2 = codec_train.train(config, tune, tr, initial_params=params)
    out["codec/finetune"] = {"history": h2, "eval_ema": codec_train.evaluate(config, e2, va, 0.005),
                             "params": tree_stats(p2), "ema": tree_stats(e2)}
    if len(jax.devices()) >= 2:
        p3, e3, h3 = codec_train.train(config, cfg, tr, data_parallel=2)
        out["codec/data_parallel2"] = {"history": h3, "eval_ema": codec_train.evaluate(config, e3, va, 0.01),
                                       "params": tree_stats(p3), "ema": tree_stats(e3)}


def sandwich(out):
    tr, va = photos()
    config = SandwichConfig((4, 4, 4), (4, 4, 4), 50)
    cfg = codec_train.codec_recipe(**CODEC_RECIPE)
    params, ema, hist = sandwich_train.train(config, cfg, tr)
    out["sandwich/scratch"] = {"history": hist, "eval_real_ema": sandwich_train.evaluate_real(config, ema, va, 0.01),
                               "params": tree_stats(params), "ema": tree_stats(ema)}


def main(argv=None) -> int:
    out = {"jax": jax.__version__, "devices": len(jax.devices())}
    classifier(out)
    codec(out)
    sandwich(out)
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    if "--write" in (sys.argv[1:] if argv is None else argv):
        REFERENCE.write_text(text)
        print(f"wrote {REFERENCE}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
