import json

import numpy as np
import pytest

from src.calibrate import calibrate
from src.data.registry import Registry
from src.data.volumes import VolumeStore
from src.metrics.surface_dice import surface_dice
from src.utils.entry import compose_config
from src.utils.errors import UserError


def cfg_for(tmp_path, data, *overrides):
    return compose_config("calibrate", [
        f"paths.data_dir={data}", "progress=false", "engine.roi_size=32", "engine.sw_batch_size=16", *overrides], tmp_path / "run")


@pytest.fixture
def validation(tiny_phantom):
    group = Registry.load().fold("2d", 0).val
    image, truth = VolumeStore(progress=False).open_pair(group.images_dir(tiny_phantom), group.labels_dir(tiny_phantom),
                                                        group.images_follow_labels)
    return group, image, truth


def test_sweep_scores_every_candidate_like_the_metric(tmp_path, tiny_phantom, validation):
    group, image, truth = validation
    rng = np.random.default_rng(0)
    vessel = np.asarray(truth.data) > 127
    prob = np.clip(vessel * 0.6 + rng.normal(0.2, 0.12, vessel.shape), 0, 1).astype(np.float16)
    np.save(tmp_path / "p.npy", prob)
    result = calibrate(cfg_for(tmp_path, tiny_phantom, f"probabilities={tmp_path / 'p.npy'}", "thresholds=[0.1,0.5,0.9]",
                               "top_fractions=[0.01,0.5]"))
    rows = {(r["mode"], r["value"]): r for r in result["rows"]}
    for t in (0.1, 0.5, 0.9):
        assert rows[("fixed", t)]["surface_dice"] == pytest.approx(surface_dice(prob > t, vessel), abs=1e-12)
    assert result["best"]["fixed"]["value"] == 0.5  # noise below, vessels above
    assert rows[("top_fraction", 0.5)]["fraction"] == pytest.approx(0.5, abs=0.01)
    assert json.loads((tmp_path / "run" / "calibration.json").read_text())["volume"] == group.name


def test_component_removal_applies_to_every_candidate(tmp_path, tiny_phantom, validation):
    from scipy import ndimage

    _, _, truth = validation
    vessel = np.asarray(truth.data) > 127
    prob = vessel.astype(np.float16) * 0.9
    prob[1, 1, 1] = 0.9  # a lone voxel: removed by min_component_size=2
    np.save(tmp_path / "p.npy", prob)
    result = calibrate(cfg_for(tmp_path, tiny_phantom, f"probabilities={tmp_path / 'p.npy'}", "thresholds=[0.5]", "top_fractions=[]",
                               "postprocess.min_component_size=2"))
    labels, _ = ndimage.label(prob > 0.5, np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())
    kept = (sizes >= 2)[labels] & (labels > 0)
    assert result["rows"][0]["surface_dice"] == pytest.approx(surface_dice(kept, vessel), abs=1e-12)


def test_calibrate_predicts_with_checkpoints_and_keeps_the_probabilities(tmp_path, tiny_phantom, validation):
    from tests.inference.helpers import write_checkpoint

    group, image, _ = validation
    ckpt, _ = write_checkpoint(tmp_path / "m.ckpt")
    result = calibrate(cfg_for(tmp_path, tiny_phantom, f"checkpoints=[{ckpt}]", "thresholds=[0.3,0.6]", "top_fractions=[0.05]"))
    assert len(result["rows"]) == 3
    kept = np.load(tmp_path / "run" / "probabilities" / f"{group.name}.npy", mmap_mode="r")
    assert kept.shape == image.shape and kept.dtype == np.float16


def test_bad_inputs_are_clear_errors(tmp_path, tiny_phantom, validation):
    with pytest.raises(UserError, match="nothing to calibrate"):
        calibrate(cfg_for(tmp_path, tiny_phantom))
    np.save(tmp_path / "p.npy", np.zeros((2, 3, 4), np.float16))
    with pytest.raises(UserError, match=r"is not the validation volume kidney_3_dense's \("):
        calibrate(cfg_for(tmp_path, tiny_phantom, f"probabilities={tmp_path / 'p.npy'}"))
