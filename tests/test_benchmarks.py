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
