"""The trainers report a child's epoch and step to the search's progress bar."""

from __future__ import annotations

import io

from layernas.progress import ProgressBar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def listening_bar() -> tuple[ProgressBar, FakeTerminal]:
    out = FakeTerminal()
    bar = ProgressBar(out, child_interval=0.0)
    bar.evaluations(0, 10, 0.0, None)
    bar("[x] 0 evals/10 | 0 s | no feasible architecture yet")
    return bar, out


def test_classifier_training_reports_epoch_and_step():
    from layernas.trainers import data, train
    from test_trainers import TINY, TinyNet

    ds = data.synthetic_dataset(num_classes=4, per_class=40, size=16)
    tr, va = data.split_validation(ds, per_class=8, seed=0)
    bar, out = listening_bar()
    try:
        res = train.train_model(TinyNet(4, 4), tr, va, TINY.replace(epochs=2), 0)
    finally:
        bar.close()
    steps = len(tr) // TINY.batch_size
    assert res.status == "ok"
    text = out.getvalue()
    assert f"training child: epoch 1/2 step 1/{steps}" in text
    assert f"training child: epoch 2/2 step {steps}/{steps}" in text


def _train_tiny_codec(steps: int = 3):
    import numpy as np

    from layernas.search_spaces.codec import CodecConfig
    from layernas.trainers.codec_train import codec_recipe, train

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(2)]
    recipe = codec_recipe(steps=steps, batch_size=2, crop_size=64, learning_rate=3e-3, warmup_steps=1, ema_decay=0.0)
    return train(CodecConfig.small(width=8, latent=8), recipe, images)


def test_codec_training_steps_reach_the_bar():
    bar, out = listening_bar()
    try:
        _train_tiny_codec(3)
    finally:
        bar.close()
    assert "training child: step 3/3" in out.getvalue()


def test_without_a_bar_training_writes_nothing(capsys):
    _train_tiny_codec(1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
