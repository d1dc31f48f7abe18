import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from src.metrics.rle import rle_decode
from src.predict import predict
from src.utils.entry import compose_config
from src.utils.errors import UserError
from src.utils.settings import REPO_ROOT
from tests.inference.helpers import write_checkpoint, write_checkpoint_3d


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", 3)[0]


def cfg_for(tmp_path, data, checkpoint, *overrides):
    return compose_config("predict", [
        f"checkpoints=[{checkpoint}]", f"paths.data_dir={data}", f"output={tmp_path / 'submission.csv'}",
        "engine.roi_size=32", "engine.sw_batch_size=16", "progress=false", *overrides], tmp_path / "run")


def test_submission_follows_sample_submission(tmp_path, tiny_phantom, checkpoint):
    out = predict(cfg_for(tmp_path, tiny_phantom, checkpoint))
    sub = pd.read_csv(out, keep_default_na=False)
    sample = pd.read_csv(tiny_phantom / "sample_submission.csv")
    assert list(sub.columns) == ["id", "rle"] and list(sub.id) == list(sample.id)
    solution = pd.read_csv(tiny_phantom / "solution.csv", keep_default_na=False).set_index("id")
    for row in sub.itertuples():
        rle_decode(row.rle, (solution.loc[row.id, "height"], solution.loc[row.id, "width"]))  # fits its slice
    assert not (tmp_path / "run" / "probabilities").exists()  # removed unless keep_probabilities


def test_empty_slices_are_one_zero(tmp_path, tiny_phantom, checkpoint):
    sub = pd.read_csv(predict(cfg_for(tmp_path, tiny_phantom, checkpoint, "threshold=1.5")), keep_default_na=False)
    assert (sub.rle == "1 0").all()


def test_three_slices_per_kidney_as_in_the_public_download(tmp_path, tiny_phantom, checkpoint):
    data = tmp_path / "raw"
    ids = []
    for kidney in ("kidney_5", "kidney_6"):
        (data / "test" / kidney / "images").mkdir(parents=True)
        for n in range(3):
            shutil.copy(tiny_phantom / "test" / kidney / "images" / f"{n:04d}.tif", data / "test" / kidney / "images")
            ids.append(f"{kidney}_{n:04d}")
    pd.DataFrame({"id": ids, "rle": "1 0"}).to_csv(data / "sample_submission.csv", index=False)
    sub = pd.read_csv(predict(cfg_for(tmp_path, data, checkpoint, "tta=d4")), keep_default_na=False)
    assert list(sub.id) == ids


def test_mismatched_sample_submission_is_an_error(tmp_path, tiny_phantom, checkpoint):
    data = tmp_path / "raw"
    shutil.copytree(tiny_phantom / "test", data / "test")
    pd.DataFrame({"id": ["kidney_5_0000", "kidney_7_0000"], "rle": "1 0"}).to_csv(data / "sample_submission.csv", index=False)
    with pytest.raises(UserError, match="lists kidney 'kidney_7', which is not among the test volumes"):
        predict(cfg_for(tmp_path, data, checkpoint))
    pd.DataFrame({"id": ["kidney_5_0999"], "rle": "1 0"}).to_csv(data / "sample_submission.csv", index=False)
    with pytest.raises(UserError, match="lists 'kidney_5_0999', but kidney_5 has slices 0000-"):
        predict(cfg_for(tmp_path, data, checkpoint))


def test_missing_checkpoints_are_errors(tmp_path, tiny_phantom, checkpoint):
    with pytest.raises(UserError, match="checkpoint not found"):
        predict(cfg_for(tmp_path, tiny_phantom, tmp_path / "nope.ckpt"))
    with pytest.raises(UserError, match="needs one value per checkpoint"):
        predict(cfg_for(tmp_path, tiny_phantom, checkpoint, "weights=[1,2]"))


def test_cli_error_is_one_line(tmp_path, tiny_phantom):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-m", "src.predict", f"paths.data_dir={tiny_phantom}", f"paths.log_dir={tmp_path}"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2 and "error: no model: pass checkpoints=" in out.stderr and "Traceback" not in out.stderr


def test_2d_and_3d_checkpoints_are_blended(tmp_path, tiny_phantom, checkpoint):
    ckpt3d, _ = write_checkpoint_3d(tmp_path / "3d.ckpt")
    for mode in ("roi", "average"):
        out = predict(cfg_for(tmp_path, tiny_phantom, checkpoint, f"checkpoints_3d=[{ckpt3d}]", "engine_3d.roi_size=16",
                              f"blend.mode={mode}", "keep_probabilities=true"))
        sub = pd.read_csv(out, keep_default_na=False)
        assert list(sub.id) == list(pd.read_csv(tiny_phantom / "sample_submission.csv").id)
    assert (tmp_path / "run" / "probabilities" / "kidney_5_3d.npy").exists()


def _masks(sub, solution):
    out = {}
    for row in sub.itertuples():
        kidney = row.id.rsplit("_", 1)[0]
        h, w = solution.loc[row.id, "height"], solution.loc[row.id, "width"]
        out.setdefault(kidney, []).append(rle_decode(row.rle, (h, w)))
    return {k: np.stack(v) for k, v in out.items()}


def test_levers_change_the_prediction_as_documented(tmp_path, tiny_phantom, checkpoint):
    from scipy import ndimage

    solution = pd.read_csv(tiny_phantom / "solution.csv", keep_default_na=False).set_index("id")
    base = _masks(pd.read_csv(predict(cfg_for(tmp_path, tiny_phantom, checkpoint, "threshold=0.45")), keep_default_na=False), solution)
    # top fraction: about that fraction of each kidney's voxels
    top = _masks(pd.read_csv(predict(cfg_for(tmp_path, tiny_phantom, checkpoint, "postprocess.threshold_mode=top_fraction",
                                             "postprocess.top_fraction=0.05")), keep_default_na=False), solution)
    for kidney, m in top.items():
        assert m.mean() == pytest.approx(0.05, abs=0.01), kidney
    # component filter: no 26-connected component under the size is left, the big ones are kept
    size = 20
    filtered = _masks(pd.read_csv(predict(cfg_for(tmp_path, tiny_phantom, checkpoint, "threshold=0.45",
                                                  f"postprocess.min_component_size={size}")), keep_default_na=False), solution)
    for kidney, m in filtered.items():
        labels, n = ndimage.label(m, np.ones((3, 3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        assert n == 0 or sizes.min() >= size
        component_sizes = np.bincount(ndimage.label(base[kidney], np.ones((3, 3, 3)))[0].ravel())[1:]
        assert (m <= base[kidney]).all() and m.sum() == sum(s for s in component_sizes if s >= size)
    # resolution: kidney_6 (63.08 um) changes, kidney_5 (50.28 um, within min_change) does not
    rescaled = _masks(pd.read_csv(predict(cfg_for(tmp_path, tiny_phantom, checkpoint, "threshold=0.45", "resolution.rescale=true")),
                                  keep_default_na=False), solution)
    np.testing.assert_array_equal(rescaled["kidney_5"], base["kidney_5"])
    assert rescaled["kidney_6"].shape == base["kidney_6"].shape and (rescaled["kidney_6"] != base["kidney_6"]).any()


def test_bad_postprocess_mode_is_a_clear_error(tmp_path, tiny_phantom, checkpoint):
    with pytest.raises(UserError, match="threshold_mode: unknown .*; choose one of fixed, top_fraction"):
        predict(cfg_for(tmp_path, tiny_phantom, checkpoint, "postprocess.threshold_mode=best"))


def test_estimate_times_every_kidney_and_view_and_predicts_nothing(tmp_path, tiny_phantom, checkpoint, capsys):
    from src.predict import estimate

    seconds = estimate(cfg_for(tmp_path, tiny_phantom, checkpoint, "estimate=true", "estimate_repeats=1"))
    out = capsys.readouterr().out
    assert seconds > 0 and "h budget" in out
    for kidney in ("kidney_5", "kidney_6"):
        for view in ("z", "xz", "zy"):
            assert any(line.split()[:2] == [kidney, view] for line in out.splitlines())
    assert not (tmp_path / "submission.csv").exists()


def test_estimate_counts_every_window_of_every_slice():
    """A network that sleeps 2 ms per window: the estimate is at least windows x 2 ms per slice."""
    import torch

    from src.inference.checkpoints import Member
    from src.inference.engine import InferenceEngine

    class Sleeper(torch.nn.Module):
        def forward(self, x):
            import time

            time.sleep(0.002 * x.shape[0])
            return x[:, :1]

    engine = InferenceEngine([Member(Sleeper(), 3, tta="flip")], roi_size=32, sw_batch_size=4, progress=False, views=("z",))
    (row,) = engine.estimate({"k": (10, 64, 64)}, repeats=1)
    windows = 9 * 3  # 3 x 3 windows of 32 at overlap 0.25 on 64 x 64, three flips
    assert row["slices"] == 10 and row["s_per_slice"] >= windows * 0.002 and row["seconds"] == pytest.approx(10 * row["s_per_slice"])


def test_pipelined_engine_writes_the_synchronous_submission(tmp_path, tiny_phantom, checkpoint):
    serial = pd.read_csv(predict(cfg_for(tmp_path / "a", tiny_phantom, checkpoint, "engine.pipeline=false", "tta=flip")))
    piped = pd.read_csv(predict(cfg_for(tmp_path / "b", tiny_phantom, checkpoint, "engine.prefetch=2", "tta=flip")))
    pd.testing.assert_frame_equal(serial, piped)


def test_the_default_threshold_is_the_checkpoints_own(tmp_path, tiny_phantom):
    """threshold=checkpoint (the default): a checkpoint trained with model.predict_threshold=validated is cut at the
    val/sd@<th> threshold it validated best at; the submission equals the one with that number given."""
    validation = {"val/sd@0.3": 0.1, "val/sd@0.4": 0.2, "val/sd@0.5": 0.15, "epoch": 3}
    ckpt = write_checkpoint(tmp_path / "v.ckpt", 3, hparams={"predict_threshold": "validated"}, validation=validation)[0]
    own = pd.read_csv(predict(cfg_for(tmp_path / "a", tiny_phantom, ckpt)), keep_default_na=False)
    given = pd.read_csv(predict(cfg_for(tmp_path / "b", tiny_phantom, ckpt, "threshold=0.4")), keep_default_na=False)
    recipe = pd.read_csv(predict(cfg_for(tmp_path / "c", tiny_phantom, ckpt, "threshold=0.5")), keep_default_na=False)
    assert own.equals(given)
    assert not own.equals(recipe)  # the random network's probabilities lie between 0.4 and 0.5


def test_kept_probabilities_decide_as_the_networks_would_without_running_them(tmp_path, tiny_phantom, checkpoint, monkeypatch):
    """probabilities_from=<a kept folder>: every decision setting gives the submission a fresh prediction with
    that setting gives, 2-D alone and blended with 3-D, and no network runs."""
    from src.inference.predictor import KidneyPredictor

    ckpt3d, _ = write_checkpoint_3d(tmp_path / "3d.ckpt")
    with_3d = [f"checkpoints_3d=[{ckpt3d}]", "engine_3d.roi_size=16"]
    decisions = [["threshold=0.45"], ["threshold=0.3", "postprocess.min_component_size=20"],
                 ["postprocess.threshold_mode=top_fraction", "postprocess.top_fraction=0.05"]]
    fresh = {}
    for extra, name in (([], "2d"), (with_3d, "blend")):
        for i, decision in enumerate(decisions):
            run = tmp_path / f"{name}{i}"
            overrides = (*extra, *decision, "keep_probabilities=true") if i == 0 else (*extra, *decision)
            fresh[name, i] = pd.read_csv(predict(compose_config("predict", [
                f"checkpoints=[{checkpoint}]", f"paths.data_dir={tiny_phantom}", f"output={run / 'sub.csv'}", "engine.roi_size=32",
                "engine.views=[z]", "progress=false", *overrides], run)), keep_default_na=False)
    assert (fresh["2d", 0].rle != fresh["2d", 1].rle).any()  # the decisions differ, so equality below means something

    def no_network(*args, **kwargs):
        raise AssertionError("probabilities_from must not run the networks")

    monkeypatch.setattr(KidneyPredictor, "probabilities", no_network)
    for extra, name in (([], "2d"), (with_3d, "blend")):
        for i, decision in enumerate(decisions):
            run = tmp_path / f"reuse_{name}{i}"
            out = predict(compose_config("predict", [
                f"checkpoints=[{checkpoint}]", f"paths.data_dir={tiny_phantom}", f"output={run / 'sub.csv'}", "progress=false",
                "engine.roi_size=32", "engine.views=[z]", *extra, *decision,
                f"probabilities_from={tmp_path / f'{name}0' / 'probabilities'}"], run))
            pd.testing.assert_frame_equal(pd.read_csv(out, keep_default_na=False), fresh[name, i])
    assert (tmp_path / "2d0" / "probabilities" / "kidney_5.npy").exists()  # what was read is left alone


def test_kept_probabilities_missing_or_of_another_run_are_one_line_errors(tmp_path, tiny_phantom, checkpoint):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"probabilities_from=.*kidney_5\.npy: file not found"):
        predict(cfg_for(tmp_path, tiny_phantom, checkpoint, f"probabilities_from={empty}"))
    np.save(empty / "kidney_5.npy", np.zeros((3, 4, 5), np.float16))
    with pytest.raises(UserError, match=r"shape \(3, 4, 5\) is not kidney_5's"):
        predict(cfg_for(tmp_path, tiny_phantom, checkpoint, f"probabilities_from={empty}"))
    ckpt3d, _ = write_checkpoint_3d(tmp_path / "3d.ckpt")
    predict(cfg_for(tmp_path / "a", tiny_phantom, checkpoint, "keep_probabilities=true"))
    kept = tmp_path / "a" / "run" / "probabilities"
    with pytest.raises(UserError, match=r"kept by a run with checkpoints_3d=\[\], this run has \["):
        predict(cfg_for(tmp_path, tiny_phantom, checkpoint, f"checkpoints_3d=[{ckpt3d}]", "engine_3d.roi_size=16",
                        f"probabilities_from={kept}"))
    other = write_checkpoint(tmp_path / "other.ckpt", 3)[0]
    with pytest.raises(UserError, match=r"kept by a run with checkpoints=\[.*model\.ckpt'\], this run has \[.*other\.ckpt'\]"):
        predict(cfg_for(tmp_path, tiny_phantom, other, f"probabilities_from={kept}"))
    # the other settings that made the probabilities must be this run's too; memory-only ones need not
    for setting, says in (("tta=flip", r"with tta=none, this run has flip; pass the same tta"),
                          ("engine.views=[z]", r"with views=\['z', 'xz', 'zy'\], this run has \['z'\]"),
                          ("engine.roi_size=48", r"with engine=\{'roi_size': 32, .*\}, this run has \{'roi_size': 48, "),
                          ("resolution.rescale=true", r"with resolution=\{.*'rescale': False.*\}, this run has \{.*'rescale': True")):
        with pytest.raises(UserError, match=says) as err:
            predict(cfg_for(tmp_path, tiny_phantom, checkpoint, setting, f"probabilities_from={kept}"))
        assert "\n" not in str(err.value)
    predict(cfg_for(tmp_path / "b", tiny_phantom, checkpoint, "resolution.chunk=4", "engine.sw_batch_size=4", f"probabilities_from={kept}"))
    (kept / "models.json").unlink()  # a folder kept before the record existed: only the files are checked
    with pytest.raises(UserError, match=r"probabilities_from \(3-D\)=.*kidney_5_3d\.npy: file not found"):
        predict(cfg_for(tmp_path, tiny_phantom, checkpoint, f"checkpoints_3d=[{ckpt3d}]", "engine_3d.roi_size=16",
                        f"probabilities_from={kept}"))
    with pytest.raises(UserError, match="is this run's own work folder"):
        predict(cfg_for(tmp_path / "a", tiny_phantom, checkpoint, f"probabilities_from={tmp_path / 'a' / 'run' / 'probabilities'}"))
    assert (tmp_path / "a" / "run" / "probabilities" / "kidney_5.npy").exists()
