import argparse
import json
from pathlib import Path

import pytest

from src.pipelines.robustness import markdown, spread_verdict, summarise
from tests.pipelines.overrides import TINY_3D, TINY_TRAIN


def test_a_lever_is_better_or_worse_only_beyond_the_spread_over_seeds():
    assert spread_verdict([0.05, 0.06, 0.04]) == "better"
    assert spread_verdict([-0.05, -0.06, -0.04]) == "worse"
    assert spread_verdict([0.05, -0.04, 0.02]) == "within spread"
    assert spread_verdict([0.3]) == "one seed: no verdict"


def test_seeds_are_a_comma_separated_list():

    from src.pipelines.robustness import seed_list

    assert seed_list("0,1,2") == [0, 1, 2]
    for bad in ("", "a,b", "1,1", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            seed_list(bad)


def test_summary_is_mean_and_std_over_seeds_paired_against_2d_alone():
    def rows(blend, alone):
        return [{"lever": "blend", "kidney_5": blend, "kidney_6": blend, "mean": blend},
                {"lever": "2-D alone", "kidney_5": alone, "kidney_6": alone, "mean": alone}]

    summary = summarise({0: rows(0.5, 0.4), 1: rows(0.7, 0.6), 2: rows(0.6, 0.5)})
    blend, alone = summary
    assert blend["kidney_5"] == pytest.approx(0.6) and blend["kidney_5_std"] == pytest.approx(0.1)
    assert blend["diff"] == pytest.approx(0.1) and blend["diff_std"] == pytest.approx(0.0, abs=1e-12)
    assert blend["verdict"] == "better" and alone["verdict"] == "reference"  # seeds vary a lot, the pairing does not


def test_a_lever_that_older_saved_seeds_lack_is_summarised_over_the_seeds_that_have_it():
    """Seeds saved before a row was added keep their rows; the new row is matched by name, not position."""
    def rows(alone, new=None):
        out = [{"lever": "blend", "kidney_5": 0.2, "kidney_6": 0.2, "mean": 0.2},
               {"lever": "2-D alone", "kidney_5": alone, "kidney_6": alone, "mean": alone}]
        return out + ([{"lever": "own threshold", "kidney_5": new, "kidney_6": new, "mean": new}] if new is not None else [])

    summary = summarise({0: rows(0.3), 1: rows(0.5, 0.6), 2: rows(0.1, 0.3)})
    new = {r["lever"]: r for r in summary}["own threshold"]
    assert new["seeds"] == [1, 2] and new["kidney_5"] == pytest.approx(0.45)
    assert new["diff"] == pytest.approx(0.15) and new["verdict"] == "better"
    assert [r["seeds"] for r in summary][:2] == [[0, 1, 2], [0, 1, 2]]
    assert "| own threshold (seeds 1, 2 only) |" in markdown(summary) and "over 3 seeds" in markdown(summary)


@pytest.mark.slow
def test_robustness_table_on_the_tiny_phantom(tmp_path):
    """Every lever row is trained for each seed, calibrated, predicted and scored (models of a few steps: the values mean nothing)."""
    from src.pipelines.robustness import main

    argv = ["--size", "tiny", "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work"), "--quiet", "--seeds", "0,1",
            *TINY_TRAIN, "--train-3d", *TINY_3D]
    rows = main(argv)
    assert len(rows) == 14 and all(0.0 <= r["kidney_5"] <= 1.0 and 0.0 <= r["kidney_6"] <= 1.0 for r in rows)
    assert all(len(r["kidney_5_values"]) == 2 for r in rows)
    table = (tmp_path / "work" / "robustness.md").read_text().splitlines()
    assert len(table) == 16 and "resolution.rescale=true" in "\n".join(table) and "± " in table[2]
    assert (tmp_path / "work" / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "work" / "robustness.json").read_text())
    assert set(saved["calibration"]["0"]) == {"fixed", "top_fraction"}
    for seed in (0, 1):
        for run in ("recipe", "scale_aug", "rotate3d", "dynunet"):
            assert (tmp_path / "work" / f"seed{seed}" / "train" / run / "metrics.json").exists()
    assert not list((tmp_path / "work" / "seed0" / "predict").glob("*/probabilities"))  # the kept ones go after the seed
    config = (tmp_path / "work" / "seed1" / "train" / "rotate3d" / "config.yaml").read_text()
    assert "rotate3d_prob: 0.5" in config and "seed: 1" in config


def test_a_finished_seed_is_saved_and_reused_not_measured_again(tmp_path, monkeypatch):

    from src.pipelines import robustness

    rows = [{"lever": "blend", "kidney_5": 0.2, "kidney_6": 0.3, "mean": 0.25}]
    calibration = {"fixed": {"value": 0.4}, "top_fraction": {"value": 0.01}}
    measured = []

    def measure(seed, data, work, args):
        measured.append(seed)
        return rows, calibration

    monkeypatch.setattr(robustness, "one_seed", measure)
    args = argparse.Namespace(data=str(tmp_path / "data"))
    assert robustness.finished_seed(3, tmp_path / "seed3", args) == (rows, calibration)
    assert measured == [3] and json.loads((tmp_path / "seed3" / "rows.json").read_text())["seed"] == 3
    assert robustness.finished_seed(3, tmp_path / "seed3", args) == (rows, calibration)  # read back
    assert measured == [3]


def test_a_seed_reused_from_other_library_versions_says_so(tmp_path, monkeypatch, capsys):
    """Training is deterministic per seed for one install only; a saved seed records the versions it was
    measured with, and reusing it under others prints which changed."""

    from src.pipelines import robustness
    from src.utils.environment import library_versions

    rows = [{"lever": "blend", "kidney_5": 0.2, "kidney_6": 0.3, "mean": 0.25}]
    monkeypatch.setattr(robustness, "one_seed", lambda seed, data, work, args: (rows, {}))
    args = argparse.Namespace(data=str(tmp_path / "data"))
    robustness.finished_seed(0, tmp_path / "seed0", args)
    saved = tmp_path / "seed0" / "rows.json"
    entry = json.loads(saved.read_text())
    assert entry["libraries"] == library_versions()
    capsys.readouterr()
    robustness.finished_seed(0, tmp_path / "seed0", args)
    assert "other libraries" not in capsys.readouterr().out
    entry["libraries"]["timm"] = "0.0.1"
    saved.write_text(json.dumps(entry))
    robustness.finished_seed(0, tmp_path / "seed0", args)
    assert f"timm 0.0.1 -> {library_versions()['timm']}" in capsys.readouterr().out
    del entry["libraries"]
    saved.write_text(json.dumps(entry))
    robustness.finished_seed(0, tmp_path / "seed0", args)
    assert "saved before versions were recorded" in capsys.readouterr().out


def test_a_lever_of_your_own_is_a_name_and_its_hydra_overrides():
    from src.pipelines.robustness import lever_runs
    from src.utils.errors import UserError

    assert lever_runs(None) == {}
    assert lever_runs([["pseudo", "data.train_pseudo=true"], ["wide", "data.img_size=128", "data.batch_size=8"]]) == {
        "pseudo": ["data.train_pseudo=true"], "wide": ["data.img_size=128", "data.batch_size=8"]}
    for bad, says in ((["pseudo"], "KEY=VALUE"), (["pseudo", "data.train_pseudo"], "data.train_pseudo"),
                      (["../x", "a=1"], "folder name"), (["recipe", "a=1"], "taken"), (["dynunet", "a=1"], "taken")):
        with pytest.raises(UserError, match=says):
            lever_runs([bad])
    with pytest.raises(UserError, match="taken"):
        lever_runs([["p", "a=1"], ["p", "b=2"]])


def test_a_lever_asked_for_after_a_seed_finished_is_added_to_its_saved_rows(tmp_path, monkeypatch):
    """The seed's built-in rows are reused as saved; only the new lever is trained and scored, once."""

    from src.pipelines import robustness

    saved = [{"lever": "blend", "kidney_5": 0.2, "kidney_6": 0.3, "mean": 0.25},
             {"lever": "2-D alone, threshold 0.5", "kidney_5": 0.4, "kidney_6": 0.4, "mean": 0.4}]
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "rows.json").write_text(json.dumps({"seed": 0, "rows": saved, "calibration": {"fixed": {}}}))
    trained = []

    def train(name, overrides, seed, data, work, args):
        trained.append((name, overrides, seed))
        return tmp_path / f"{name}.ckpt"

    def score(label, ckpt, overrides, key, common, data, work):
        return {"lever": label, "kidney_5": 0.5, "kidney_6": 0.6, "mean": 0.55, "checkpoint": ckpt.name, "key": key}

    monkeypatch.setattr(robustness, "one_seed", lambda *a: pytest.fail("a finished seed is not measured again"))
    monkeypatch.setattr(robustness, "train_2d", train)
    monkeypatch.setattr(robustness, "score_row", score)
    args = argparse.Namespace(data=str(tmp_path / "data"), quiet=True, levers={"pseudo": ["data.train_pseudo=true"]})
    rows, _ = robustness.finished_seed(0, tmp_path / "seed0", args)
    assert rows[:2] == saved and rows[2]["lever"] == "2-D trained with `data.train_pseudo=true`"
    assert rows[2]["checkpoint"] == "pseudo.ckpt" and rows[2]["key"] == "lever_pseudo"
    assert trained == [("pseudo", ["data.train_pseudo=true"], 0)]
    assert json.loads((tmp_path / "seed0" / "rows.json").read_text())["rows"] == rows
    assert robustness.finished_seed(0, tmp_path / "seed0", args)[0] == rows and len(trained) == 1  # now saved
    summary = robustness.summarise({0: rows})
    assert summary[2]["lever"] == rows[2]["lever"] and summary[2]["diff"] == pytest.approx(0.15)


def test_lever_options_parse_beside_training_overrides(monkeypatch, tmp_path):
    from src.pipelines import robustness

    seen = {}

    def stop(seed, work, args):
        seen.update(vars(args))
        raise SystemExit(0)

    monkeypatch.setattr(robustness, "finished_seed", stop)
    monkeypatch.setattr("src.data.phantom.build_phantom", lambda *a, **k: None)
    monkeypatch.setattr("src.data.multiview.project_split", lambda *a, **k: None)
    with pytest.raises(SystemExit):
        robustness.main(["--work-dir", str(tmp_path), "--seeds", "0", "trainer.max_steps=20",
                         "--lever", "pseudo", "data.train_pseudo=true", "--lever", "big", "data.img_size=128"])
    assert seen["train_overrides"] == ["trainer.max_steps=20"]
    assert seen["levers"] == {"pseudo": ["data.train_pseudo=true"], "big": ["data.img_size=128"]}


def test_rows_that_differ_only_in_how_they_decide_share_one_prediction(tmp_path, monkeypatch):
    """The first row of a checkpoint (and of its 3-D models and resolution) keeps its probabilities; later rows
    with the same ones decide from them (threshold, post-processing, the checkpoint's own threshold)."""
    from src.pipelines import robustness

    calls = []

    def predict(cfg):
        calls.append(cfg)
        return cfg.output

    monkeypatch.setattr("src.predict.predict", predict)
    monkeypatch.setattr("src.pipelines.common.score_csv", lambda out, solution: {"kidney_5": 0.5, "kidney_6": 0.25})
    monkeypatch.setattr(robustness, "compose_cfg", lambda config, overrides, run_dir: _Cfg(overrides, run_dir))
    kept = {}
    rows = [("a", "r.ckpt", []), ("b", "r.ckpt", ["threshold=0.4"]), ("c", "r.ckpt", ["resolution.rescale=true"]),
            ("d", "r.ckpt", ["resolution.rescale=true", "postprocess.min_component_size=50"]),
            ("e", "r.ckpt", ["checkpoints_3d=[d.ckpt]"]), ("f", "s.ckpt", ["threshold=0.4"]), ("g", "r.ckpt", ["threshold=checkpoint"])]
    for i, (label, ckpt, overrides) in enumerate(rows):
        row = robustness.score_row(label, tmp_path / ckpt, overrides, f"{i:02d}", [], tmp_path, tmp_path, kept)
        assert row["mean"] == pytest.approx(0.375)
    reused = [next((o.split("=", 1)[1] for o in c.overrides if o.startswith("probabilities_from=")), None) for c in calls]
    keeps = ["keep_probabilities=true" in c.overrides for c in calls]
    assert keeps == [True, False, True, False, True, True, False]
    folder = str(tmp_path / "predict" / "{}" / "probabilities")
    assert reused == [None, folder.format("00"), None, folder.format("02"), None, None, folder.format("00")]
    assert "threshold=0.5" in calls[0].overrides and "threshold=0.5" not in calls[1].overrides
    assert robustness.probability_key(tmp_path / "r.ckpt", ["postprocess.top_fraction=0.1", "resolution.rescale=true"]) == \
        (str(tmp_path / "r.ckpt"), "resolution.rescale=true")


class _Cfg:
    def __init__(self, overrides, run_dir):
        self.overrides, self.output = overrides, next(o.split("=", 1)[1] for o in overrides if o.startswith("output="))


def test_each_seed_labels_the_external_kidney_with_its_own_recipe_model_before_its_3d_run(tmp_path, monkeypatch):
    """The 3-D rows do not depend on what ran before (make demo's labels, another seed's): each seed pseudo-labels
    the external kidney with its recipe checkpoint, then trains its 3-D model."""
    from src.pipelines import common, robustness

    order = []
    monkeypatch.setattr(robustness, "train_2d", lambda name, overrides, seed, data, work, args: Path(f"{name}_s{seed}.ckpt"))
    monkeypatch.setattr(common, "trained_size", lambda run_dir: 96)
    monkeypatch.setattr(common, "label_external", lambda data, ckpt, roi, quiet=False: order.append(("label", str(ckpt), roi)))
    monkeypatch.setattr(common, "ensure_run", lambda run_dir, overrides, t: order.append(("3d", run_dir.name)))
    monkeypatch.setattr("src.inference.checkpoints.best_checkpoint_in", lambda folder: folder / "best.ckpt")

    class Stop(Exception):
        pass

    def calibrate(cfg):
        raise Stop  # what follows is scoring, tested above

    monkeypatch.setattr("src.calibrate.calibrate", calibrate)
    args = argparse.Namespace(quiet=True, train_3d_overrides=[], levers={})
    with pytest.raises(Stop):
        robustness.one_seed(2, tmp_path / "data", tmp_path / "seed2", args)
    assert order == [("label", "recipe_s2.ckpt", 96), ("3d", robustness.DYNUNET_RUN)]
