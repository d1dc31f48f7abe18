"""The prediction path reproduces training's validation: the same checkpoint scores the same on the same
volume through ``src.calibrate`` and ``src.predict`` as the training run's ``val/sd@<th>`` (within 0.01).

The model is trained a few dozen steps on the tiny phantom (so its probabilities are neither all 0 nor
all 1); prediction uses the checkpoint's own training window (``engine.roi_size`` left at null) and the
view validation uses (``engine.views=[z]``).
"""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from src.data.registry import Registry
from src.data.volumes import VolumeStore
from src.inference.checkpoints import DEFAULT_MARGIN, checkpoint_threshold, validated_threshold
from src.metrics.rle import rle_decode
from src.metrics.surface_dice import surface_dice
from src.utils.entry import compose_config

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


def compose_cfg(config, overrides, output_dir):
    cfg = compose_config(config, overrides, output_dir)
    with open_dict(cfg):
        if "log_dir" in cfg.paths:
            cfg.paths.log_dir = str(output_dir)
    return cfg


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    """(last checkpoint, the run's final val/sd@<th> values) of a short run on the tiny phantom."""
    from src.train import train

    out = tmp_path_factory.mktemp("run")
    # The demo's optimiser and loss on the demo's earlier network (UNet++, decoder 64-8), on which the figures
    # below were measured: the demo's Unet (decoder 256-16) swings through all-background in its first
    # 40-80 steps at batch 4 here (every val/sd 0; measured 2026-12-07), so a run this short says nothing
    # about it; it learns over its 800 steps (README, "The level to reach").
    cfg = compose_cfg("train", [
        "experiment=demo", "model.net.arch=UnetPlusPlus", "model.net.decoder_channels=[64,32,16,16,8]",
        f"paths.data_dir={tiny_phantom}", "data.img_size=64", "data.batch_size=4",
        "model.val_window.sw_batch_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=40",
        "trainer.num_sanity_val_steps=0", "logger=csv", "extras.print_config=false", "~callbacks.rich_progress_bar",
        "~callbacks.model_summary", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    ], out)
    metrics = train(cfg)
    return out / "checkpoints" / "last.ckpt", {t: float(metrics[f"val/sd@{t:g}"]) for t in THRESHOLDS}


def test_the_run_learned_something(trained):
    _, val = trained
    assert max(val.values()) > 0.05, val  # otherwise the invariant below would hold trivially


def test_a_short_demo_run_s_probabilities_are_not_stuck_at_one_half(trained, tiny_phantom, tmp_path):
    """What made demo models score near zero on other kidneys (README, "Does a model carry over?"): a
    short run whose probabilities all sit near 0.5, so 0.5 cuts them at an arbitrary place. After these
    40 steps the previous demo optimiser and loss (RAdam 1e-3, Boundary DoU alone) put every voxel of the
    validation kidney between 0.3 and 0.7 and call 64 % of it vessel at 0.5; the demo's (AdamW 3e-3,
    DoU + cross-entropy) 38 % and 3 % (measured 2026-12-07 with torch 2.14.1, smp 0.6.0, timm 1.0.31).

    Whether 0.5 already scores near the best threshold after 40 steps is not pinned: it held with earlier
    library versions and not with these (val/sd@0.5 0.025, best 0.12 at 0.05), which is why the demo's
    predict threshold is the validated one (``test_the_checkpoint_records_its_validation_and_its_best_threshold``)."""
    from src.calibrate import calibrate

    ckpt, _ = trained
    rows = calibrate(compose_cfg("calibrate", [
        f"paths.data_dir={tiny_phantom}", f"checkpoints=[{ckpt}]", "engine.views=[z]", "progress=false", "thresholds=[0.5]",
        "top_fractions=[]"], tmp_path))["rows"]
    assert rows[0]["fraction"] < 0.25, rows[0]
    group = Registry.load().fold("2d", 0).val
    p = np.load(tmp_path / "probabilities" / f"{group.name}.npy").astype(np.float32)
    undecided = float(((p > 0.3) & (p < 0.7)).mean())
    assert undecided < 0.75, undecided


def test_calibrate_reproduces_validation(trained, tiny_phantom, tmp_path):
    from src.calibrate import calibrate

    ckpt, val = trained
    cfg = compose_cfg("calibrate", [
        f"paths.data_dir={tiny_phantom}", f"checkpoints=[{ckpt}]", "engine.views=[z]", "progress=false",
        f"thresholds=[{','.join(map(str, THRESHOLDS))}]", "top_fractions=[]",
    ], tmp_path / "calibrate")
    rows = {r["value"]: r["surface_dice"] for r in calibrate(cfg)["rows"]}
    for t in THRESHOLDS:
        assert rows[t] == pytest.approx(val[t], abs=0.01), (t, rows[t], val[t])


def test_predict_reproduces_validation(trained, tiny_phantom, tmp_path):
    """``src.predict`` on a test folder holding the validation kidney's whole image volume (kidney_3_sparse's
    slices: the same volume, so the same normalisation statistics), scored on the labelled slices."""
    from src.predict import predict

    ckpt, val = trained
    group = Registry.load().fold("2d", 0).val
    image, truth = VolumeStore(progress=False).open_pair(group.images_dir(tiny_phantom), group.labels_dir(tiny_phantom),
                                                        group.images_follow_labels)
    test = tmp_path / "test" / group.name / "images"
    test.mkdir(parents=True)
    for path in sorted(group.images_dir(tiny_phantom).iterdir()):
        os.symlink(path, test / path.name)
    cfg = compose_cfg("predict", [
        f"paths.data_dir={tiny_phantom}", f"checkpoints=[{ckpt}]", "engine.views=[z]", "progress=false",
        f"test_dir={tmp_path / 'test'}", "sample_submission=null", f"output={tmp_path / 'submission.csv'}",
        "keep_probabilities=true",
    ], tmp_path / "predict")
    out = predict(cfg)
    vessel = np.asarray(truth.data) > 127
    first, last = truth.first, truth.first + len(truth) - 1
    sub = pd.read_csv(out, keep_default_na=False).sort_values("id")
    sub = sub[sub.id.str[-4:].astype(int).between(first, last)]
    h, w = vessel.shape[1:]
    mask = np.stack([rle_decode(r, (h, w)) for r in sub.rle]).astype(bool)
    # Validation stacks the labelled run's end slices with zeros for their missing neighbours; predict has
    # the real neighbours. Everywhere else the probabilities are the validation path's (calibrate's, which
    # reproduces val/sd@th above), and the submission is their threshold.
    from src.calibrate import calibrate

    calibrate(compose_cfg("calibrate", [
        f"paths.data_dir={tiny_phantom}", f"checkpoints=[{ckpt}]", "engine.views=[z]", "progress=false", "thresholds=[0.5]",
        "top_fractions=[]"], tmp_path / "calibrate"))
    validated = np.load(tmp_path / "calibrate" / "probabilities" / f"{group.name}.npy").astype(np.float32)
    predicted = np.load(tmp_path / "predict" / "probabilities" / f"{group.name}.npy")[first : last + 1].astype(np.float32)
    assert np.abs(predicted[1:-1] - validated[1:-1]).max() < 2e-3
    threshold, _ = checkpoint_threshold(ckpt)  # predict's default: the demo checkpoint's validated threshold
    np.testing.assert_array_equal(mask, predicted > threshold)
    interior = (slice(1, -1),)
    assert surface_dice(mask[interior], vessel[interior]) == pytest.approx(
        surface_dice(validated[interior] > threshold, vessel[interior]), abs=1e-3)


def test_the_checkpoint_records_its_validation_and_its_best_threshold(trained):
    """The demo's model.predict_threshold=validated: last.ckpt carries the metrics of the validation before
    it, and predict's threshold is the one validated_threshold picks from its val/sd@<th> there."""
    ckpt, val = trained
    recorded = torch.load(ckpt, map_location="cpu", weights_only=False)["validation"]
    for t in THRESHOLDS:
        assert recorded[f"val/sd@{t:g}"] == pytest.approx(val[t], abs=1e-6), t
    threshold, source = checkpoint_threshold(ckpt)
    assert threshold == validated_threshold(val) and source.startswith("validated")
    assert val[threshold] >= (1 - DEFAULT_MARGIN) * max(val.values())
