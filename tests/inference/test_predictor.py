"""KidneyPredictor: one object from checkpoints to submission rows, owning its work files."""

import numpy as np
import pytest

from src.data.volumes import VolumeStore
from src.inference.predictor import WORK_FILES, KidneyPredictor
from src.metrics.rle import rle_decode
from src.utils.entry import compose_config
from tests.inference.helpers import write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", 3)[0]


def config(tmp_path, data, checkpoint, *overrides):
    return compose_config("predict", [f"checkpoints=[{checkpoint}]", f"paths.data_dir={data}", "engine.roi_size=32",
                                      "engine.sw_batch_size=16", "progress=false", *overrides], tmp_path / "run")


@pytest.fixture(scope="module")
def volume(tiny_phantom):
    return VolumeStore(progress=False).open(tiny_phantom / "test" / "kidney_5" / "images")


def test_probabilities_mask_and_rows_agree(tmp_path, tiny_phantom, checkpoint, volume):
    predictor = KidneyPredictor.from_config(config(tmp_path, tiny_phantom, checkpoint))
    assert predictor.work == tmp_path / "run" / "probabilities"
    prob, prob_3d = predictor.probabilities(volume, "kidney_5")
    assert prob.shape == volume.shape and prob.dtype == np.float16 and prob_3d is None
    assert predictor.path("kidney_5").is_file()
    mask = predictor.mask(volume, "kidney_5")
    rows = predictor.rows(volume, "kidney_5")
    assert sorted(rows) == [f"kidney_5_{n:04d}" for n in volume.numbers]
    for z, n in enumerate(volume.numbers):
        decoded = rle_decode(rows[f"kidney_5_{n:04d}"], volume.shape[1:])
        np.testing.assert_array_equal(decoded, mask(z))
        np.testing.assert_array_equal(mask(z), np.asarray(prob[z]) > 0.5)


def test_top_fraction_and_forget(tmp_path, tiny_phantom, checkpoint, volume):
    predictor = KidneyPredictor.from_config(config(tmp_path, tiny_phantom, checkpoint, "postprocess.threshold_mode=top_fraction",
                                                   "postprocess.top_fraction=0.01"))
    mask = predictor.mask(volume, "kidney_5")
    kept = sum(int(mask(z).sum()) for z in range(len(volume)))
    assert kept == pytest.approx(0.01 * np.prod(volume.shape), rel=0.2)
    assert predictor.path("kidney_5", "_mask").is_file()
    predictor.forget("kidney_5")
    assert not any(predictor.path("kidney_5", k).exists() for k in WORK_FILES)


def test_without_models_it_scores_given_probabilities(tmp_path, volume):
    predictor = KidneyPredictor(None, None, tmp_path)
    prob = np.full(volume.shape, 0.7, dtype=np.float16)
    predictor.score(volume, "k", probabilities=(prob, None))
    assert predictor.mask(volume, "k")(0).all()
    with pytest.raises(ValueError, match="without models"):
        predictor.probabilities(volume, "other")


@pytest.mark.parametrize("threshold", [0.3, 0.4, 0.1])
def test_a_fixed_threshold_is_exact_on_float16_probabilities(tmp_path, volume, threshold):
    """`p > t` for the float16 probabilities' real values: NumPy 2 compares `p16 > 0.3` in float16, where 0.3
    rounds up to 0.30005, so a stored 0.30005 (above 0.3) was not called (predict vs training's float32)."""
    just_above = np.float16(threshold)
    if float(just_above) <= threshold:
        just_above = np.nextafter(just_above, np.float16(1))
    just_below = np.nextafter(just_above, np.float16(0))
    prob = np.zeros(volume.shape, np.float16)
    prob[:, 0, 0], prob[:, 0, 1] = just_above, just_below
    predictor = KidneyPredictor(None, None, tmp_path, threshold=threshold)
    predictor.score(volume, "kidney_5", probabilities=(prob, None))
    mask = predictor.mask(volume, "kidney_5")(0)
    assert float(just_above) > threshold >= float(just_below)
    assert mask[0, 0] and not mask[0, 1] and mask.sum() == 1
