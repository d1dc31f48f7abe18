"""The inference benchmarks run and report the keys the README and issue goals quote (no timing asserted)."""

import pytest

from benchmarks.inference import overlap, plumbing


def test_plumbing_reports_engine_and_monai_throughput(capsys):
    result = plumbing((6, 96, 80), roi=64, sw_batch=4, slices=2)
    assert {"mvox_s", "monai_mvox_s", "ratio", "z_mvox_s", "xz_mvox_s", "zy_mvox_s"} <= set(result)
    assert result["mvox_s"] > 0 and result["monai_mvox_s"] > 0
    assert "MONAI sliding_window_inference alone" in capsys.readouterr().out


def test_overlap_reports_wall_device_and_host_time():
    result = overlap((4, 96, 80), roi=64, device_ms=1.0, sw_batch=4, slices=2, block_mb=1)
    assert {"wall_s", "device_s", "host_s", "serial_s"} <= set(result)
    assert result["device_s"] >= 4 * 4 * 0.001  # at least 4 windows per slice, 1 ms each


@pytest.mark.slow
def test_foreign_phantom_is_read_by_the_project_as_kaggle_data(tmp_path):
    """The independently written phantom of ``make carryover`` is data in the Kaggle layout the project
    reads without adaptation: the fold-0 volumes pair up, the test kidneys open, the truth matches them."""
    import pandas as pd

    from benchmarks.foreign_phantom import main as make_foreign
    from src.data.registry import Registry
    from src.data.volumes import VolumeStore
    from src.predict import test_volumes

    out = tmp_path / "foreign"
    make_foreign(["--out", str(out), "--seed", "1"])
    store, fold = VolumeStore(progress=False), Registry.load().fold("2d", 0)
    for group in (*fold.train, fold.val):
        if group.is_present(out):
            image, label = store.open_pair(group.images_dir(out), group.labels_dir(out), group.images_follow_labels)
            assert image.stats is not None and label.data.max() == 255
    assert fold.val.is_present(out) and fold.val.images_follow_labels
    tests = {k: store.open(f) for k, f in test_volumes(out / "test").items()}
    assert set(tests) == {"kidney_5", "kidney_6"}
    solution = pd.read_csv(out / "solution.csv")
    assert {k: int((solution.image_id == k).sum()) for k in tests} == {k: len(v) for k, v in tests.items()}


def test_ceiling_finds_the_threshold_a_clean_image_needs():
    import numpy as np

    from benchmarks.ceiling import best_global_threshold

    rng = np.random.default_rng(0)
    truth = np.zeros((12, 40, 40), bool)
    truth[:, 10:14, 10:14] = truth[:, 25:28, 5:35] = True
    image = truth + rng.normal(0, 0.05, truth.shape).astype(np.float32)
    fraction, score = best_global_threshold(image, truth)
    assert score > 0.97  # not 1: the grid steps the share of voxels by a few percent
    assert fraction == pytest.approx(truth.mean(), rel=0.05)
    noisy = truth + rng.normal(0, 0.6, truth.shape).astype(np.float32)
    assert best_global_threshold(noisy, truth)[1] < 0.8  # noise costs at tolerance 0


def test_ceiling_rows_on_the_tiny_phantom_order_from_optics_to_image():
    """The imaging steps only lose: partial volume alone is near perfect, the vessel term without tissue
    stays high, and the written image row is the threshold baseline (the same noise as render_kidney)."""
    import numpy as np

    from benchmarks.ceiling import best_global_threshold, rows_of
    from src.data.phantom.render import render_kidney

    rows = {label: (fraction, value) for label, fraction, value in rows_of("kidney_5", 0, "tiny", "A")}
    assert rows["occupancy (partial volume alone)"][1] > 0.95
    assert rows["occupancy (partial volume alone)"][1] >= rows["+ PSF"][1] > rows["+ thin-vessel contrast (no tissue)"][1]
    assert rows["+ thin-vessel contrast (no tissue)"][1] > 0.8 > rows["object without noise"][1]
    written = render_kidney("kidney_5", 0, "tiny", style="A")
    baseline = best_global_threshold(written.image.astype(np.float32), written.truth)[1]
    assert rows["image as written (with noise)"][1] == pytest.approx(baseline, abs=0.005)


def test_error_analysis_attributes_each_kind_of_error_to_its_repair():
    """On the tiny phantom's truth: a perfect call repairs to itself; a call that misses the thick vessels and adds
    false positives far from every vessel is repaired by adding those vessels or removing those voxels, not otherwise."""
    import numpy as np

    from benchmarks.errors import analyse, truth_and_radius

    truth, radius, level = truth_and_radius("kidney_5", 0, "tiny", "A")
    perfect = analyse(truth.copy(), truth, radius, level)
    assert all(v == pytest.approx(1.0) for v in perfect["surface_dice"].values())
    assert sum(perfect["false_positives"].values()) == 0
    assert all(r == 1.0 for *_, n, r in perfect["recall_by_radius"] if n)

    from scipy import ndimage

    called = truth & (radius < 1.5)
    far = np.zeros_like(truth)
    far[tuple(np.argwhere(~ndimage.binary_dilation(truth, iterations=3) & (level < 0.72))[::500].T)] = True
    result = analyse(called | far, truth, radius, level)
    sd = result["surface_dice"]
    assert sd["missed thick vessels added (radius >= 1.5 voxels)"] > sd["as predicted"] + 0.3
    assert sd["far false positives removed (> 2 voxels from a vessel)"] > sd["as predicted"]
    assert sd["missed thin vessels added (radius < 1.5 voxels)"] == pytest.approx(sd["as predicted"])
    assert result["false_positives"]["within 2 voxels of a vessel"] == 0
    assert result["false_positives"]["elsewhere in the organ"] == int(far.sum()) > 0
    thick_recall = [r for lo, hi, n, r in result["recall_by_radius"] if lo >= 1.5 and n]
    assert thick_recall and max(thick_recall) == 0.0


def test_reference_crops_are_full_size_and_about_half_hold_the_vessel():
    import numpy as np

    from benchmarks.reference import CROP, sample

    image = np.random.default_rng(0).random((20, 30, 40), dtype=np.float32)
    labels = np.zeros(image.shape, dtype=bool)
    labels[10, 15, 20] = True
    kidneys = [(image, labels, np.argwhere(labels))]
    rng = np.random.default_rng(1)
    crops = [sample(kidneys, rng) for _ in range(60)]
    assert all(img.shape == (CROP, CROP) and lab.shape == (CROP, CROP) for img, lab in crops)
    with_vessel = sum(lab.any() for _, lab in crops)
    assert 15 <= with_vessel <= 50  # about half are centred on the single vessel voxel (which the jitter keeps in view)


def test_reference_network_trains_predicts_and_scores_a_tiny_phantom(tiny_phantom, tmp_path):
    import json

    from benchmarks.reference import main

    scores = main(["--data", str(tiny_phantom), "--steps", "2", "--batch", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "reference.pt").with_name("scores.json").read_text())
    assert saved == json.loads(json.dumps(scores))
    for kidney in ("kidney_5", "kidney_6"):
        row = scores[f"{tiny_phantom.name}/{kidney}"]
        assert 0.0 <= row["at_0.5"] <= row["best"] <= 1.0
        assert 0.0 < row["truth"] < 0.2 and 0.0 <= row["called"] <= 1.0
        assert 0.0 < row["baseline"] <= 1.0
    again = main(["--data", str(tiny_phantom), "--steps", "2", "--batch", "2", "--out", str(tmp_path)])  # reuses the weights
    assert again[f"{tiny_phantom.name}/kidney_5"] == scores[f"{tiny_phantom.name}/kidney_5"]


def test_precision_benchmark_builds_the_demo_networks_from_their_configs():
    from benchmarks.precision import demo_nets

    nets = demo_nets()
    (net2, shape2, batch2), (net3, shape3, batch3) = nets.values()
    assert type(net2).__name__ == "Unet" and shape2 == (3, 96, 96) and batch2 == 16
    assert type(net3).__name__ == "DynUNet" and shape3 == (1, 64, 64, 64) and batch3 == 2


@pytest.mark.parametrize("native", [True, False])
def test_precision_benchmark_compares_float32_with_the_native_dtype(monkeypatch, capsys, native):
    import torch

    import benchmarks.precision as bench
    from src.utils import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    tiny = {"conv2d": (torch.nn.Conv2d(3, 1, 3, padding=1), (3, 16, 16), 2),
            "conv3d": (torch.nn.Conv3d(1, 1, 3, padding=1), (1, 8, 8, 8), 1)}
    monkeypatch.setattr(bench, "demo_nets", lambda: tiny)
    result = bench.main(["--steps", "1"])
    out = capsys.readouterr().out
    if native:
        assert set(result) == set(tiny) and all(set(r) == {"float32", "bfloat16"} for r in result.values())
        assert "speed-up" in out and out.count("x\n") == 4
    else:
        assert result == {} and "no native reduced precision" in out
