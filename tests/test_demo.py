import pandas as pd

from src.demo import main


TINY_TRAIN = ["data.img_size=64", "data.batch_size=4", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
              "~callbacks.rich_progress_bar", "trainer.enable_progress_bar=false"]


def test_demo_on_tiny_phantom_scores_perfect_and_empty(tmp_path, capsys):
    data, work = tmp_path / "phantom", tmp_path / "work"
    scores = main(["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet", "--skip-train"])
    assert scores == {"perfect": 1.0, "empty": 0.0}
    out = capsys.readouterr().out
    assert "perfect 1.0000, empty 0.0000" in out
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


def test_demo_trains_stage1_and_reports_the_threshold_baseline(tmp_path, capsys):
    data, work = tmp_path / "phantom", tmp_path / "work"
    results = main(["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet", *TINY_TRAIN])
    assert 0.0 <= results["model_sd"] <= 1.0 and 0.0 < results["baseline_sd"] <= 1.0
    out = capsys.readouterr().out
    assert "best val/sd@" in out and "best global intensity threshold" in out
    assert (work / "stage1" / "fold0" / "metrics.json").exists()
    # a second demo reuses the finished run instead of training again
    assert main(["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet"])["model_sd"] == results["model_sd"]
    assert "reused the finished run" in capsys.readouterr().out
