import pandas as pd

from src.demo import main


def test_demo_on_tiny_phantom_scores_perfect_and_empty(tmp_path, capsys):
    data, work = tmp_path / "phantom", tmp_path / "work"
    scores = main(["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet"])
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
    again = main(["--out", str(data), "--size", "tiny", "--work-dir", str(work), "--quiet"])
    assert again == scores
    assert "reused" in capsys.readouterr().out
