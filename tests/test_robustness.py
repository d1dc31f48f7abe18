import json

from tests.test_demo import TINY_3D, TINY_TRAIN


def test_robustness_table_on_the_tiny_phantom(tmp_path):
    """Every lever row is trained, calibrated, predicted and scored (models of a few steps: the values mean nothing)."""
    from src.robustness import main

    argv = ["--size", "tiny", "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work"), "--quiet", *TINY_TRAIN,
            "--train-3d", *TINY_3D]
    rows = main(argv)
    assert len(rows) == 12 and all(0.0 <= r["kidney_5"] <= 1.0 and 0.0 <= r["kidney_6"] <= 1.0 for r in rows)
    table = (tmp_path / "work" / "robustness.md").read_text().splitlines()
    assert len(table) == 14 and "resolution.rescale=true" in "\n".join(table)
    saved = json.loads((tmp_path / "work" / "robustness.json").read_text())
    assert set(saved["calibration"]) == {"fixed", "top_fraction"}
    for run in ("recipe", "scale_aug", "rotate3d", "dynunet"):
        assert (tmp_path / "work" / "train" / run / "metrics.json").exists()
    config = (tmp_path / "work" / "train" / "rotate3d" / "config.yaml").read_text()
    assert "rotate3d_prob: 0.5" in config
