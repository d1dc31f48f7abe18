import json
import subprocess
import sys

import pandas as pd
import pytest

from src.pipelines.demo import main
from src.utils.environment import versions_line
from src.utils.settings import REPO_ROOT
from tests.pipelines.overrides import TINY_3D, TINY_TRAIN


def test_demo_on_tiny_phantom_scores_perfect_and_empty(tmp_path, capsys):
    data, work = tmp_path / "phantom", tmp_path / "work"
    scores = main(["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet", "--skip-train"])
    assert scores == {"perfect": 1.0, "empty": 0.0}
    out = capsys.readouterr().out
    assert "perfect 1.0000, empty 0.0000" in out
    assert f"libraries (the figures move with them; README, Measured performance): {versions_line()}" in out
    index = pd.read_csv(data / "gt_extended.csv", keep_default_na=False)
    # every labelled training group and its two projections, the external kidney (no labels yet), two test kidneys
    groups = set(index.group)
    for g in ("kidney_1_dense", "kidney_2", "kidney_3_sparse", "kidney_3_dense"):
        assert {g, f"{g}_xz", f"{g}_zy"} <= groups
    assert {"hoa_ladaf_2020_31", "kidney_5", "kidney_6"} <= groups
    assert (index[index.group == "hoa_ladaf_2020_31"].msk_path == "").all()
    # second run reuses everything
    again = main(["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet", "--skip-train"])
    assert again == scores
    assert "reused" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_stage1_pseudo_labels_and_predict(tmp_path, capsys):
    data, work = tmp_path / "phantom", tmp_path / "work"
    results = main(["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet", *TINY_TRAIN, "--train-3d", *TINY_3D])
    for key in ("val_model_sd", "val_baseline_sd", "kidney_5_model", "kidney_6_model", "kidney_5_baseline", "test_model_mean",
                "kidney_5_3d", "kidney_6_blend", "test_blend_mean", "kidney_5_average", "kidney_6_average"):
        assert 0.0 <= results[key] <= 1.0, key
    out = capsys.readouterr().out
    assert "best val/sd@" in out and "best global intensity threshold" in out
    assert "2-D + 3-D average (blend.mode=average" in out and "share of voxels called at 0.5" in out
    assert (work / "stage1" / "fold0" / "metrics.json").exists()
    hoa = data / "train_ext" / "50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_"
    assert len(list((hoa / "labels").glob("*.png"))) == len(list((hoa / "images").glob("*.jp2")))
    assert (data / "train_ext" / f"{hoa.name}_xz" / "labels").is_dir()
    submission = pd.read_csv(work / "submission.csv", keep_default_na=False)
    assert list(submission.id) == list(pd.read_csv(data / "sample_submission.csv").id)
    assert (work / "pictures" / "kidney_5.png").exists() and (work / "pictures" / "kidney_6.png").exists()
    assert (work / "submission_blend.csv").exists() and (work / "stage2_3d" / "fold0" / "metrics.json").exists()
    # cross-style: the model trained on style A predicts the test kidneys of a style-B phantom built beside it
    assert 0.0 <= results["val_checkpoint_sd"] <= 1.0
    for kidney in ("kidney_5", "kidney_6"):
        assert 0.0 <= results[f"B_{kidney}_model"] <= 1.0 and 0.0 < results[f"B_{kidney}_baseline"] <= 1.0
    assert json.loads((tmp_path / "phantom_B" / ".phantom.json").read_text())["style"] == "B"
    assert "cross-style" in out and (work / "submission_style_B.csv").exists()
    # a second demo with the same settings reuses the finished runs and the pseudo labels
    same = ["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet", *TINY_TRAIN, "--train-3d", *TINY_3D]
    again = main(same)
    assert again["val_model_sd"] == results["val_model_sd"]
    out = capsys.readouterr().out
    assert out.count("reused the finished run") == 2 and "training again" not in out
    assert "wrote 0 label slices" in out and "--overwrite" not in out
    # labels some other model left in the phantom (their record names another checkpoint) are rewritten by this run's
    record = hoa / "labels_source.json"
    mine = record.read_text()
    record.write_text(mine.replace("checkpoints", "checkpoints_of_another_run"))
    main(same)
    out = capsys.readouterr().out
    assert "wrote 0 label slices" not in out and record.read_text() == mine
    assert (data / "train_ext" / f"{hoa.name}_xz" / "labels_source.json").read_text() == mine  # projected again


def test_python_m_src_demo_and_src_robustness_run_the_pipelines():
    """The commands users type (``make demo``, ``make eval-robustness``) reach the pipelines' parsers."""
    for module, option in (("src.demo", "--skip-train"), ("src.robustness", "--seeds")):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO_ROOT)
        assert out.returncode == 0 and option in out.stdout, out.stderr[-2000:]
