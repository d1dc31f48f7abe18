import numpy as np
import pytest

from src.data.registry import Registry
from src.data.volumes import VolumeStore
from src.inference.checkpoints import Member
from src.inference.engine import InferenceEngine
from src.inference.resolution import predict_at, rescale_factor
from src.utils.errors import UserError
from tests.inference.helpers import CentreLogit


def test_factor_comes_from_the_registry_or_the_config():
    reg = Registry.load()
    on = {"rescale": True, "min_change": 0.02, "voxel_um": {"kidney_9": 100.0}}
    assert rescale_factor("kidney_6", on, reg) == pytest.approx(63.08 / 50)
    assert rescale_factor("kidney_5", on, reg) == 1.0  # 50.28 um: within min_change
    assert rescale_factor("kidney_5", {**on, "min_change": 0.0}, reg) == pytest.approx(50.28 / 50)
    assert rescale_factor("kidney_9", on, reg) == 2.0
    assert rescale_factor("kidney_6", {"rescale": False}, reg) == 1.0
    assert rescale_factor("kidney_6", {**on, "target_um": 63.08}, reg) == 1.0
    with pytest.raises(UserError, match="resolution.voxel_um.kidney_7"):
        rescale_factor("kidney_7", on, reg)


def test_rescaled_prediction_has_the_volume_shape_and_matches_a_pointwise_model(tmp_path, tiny_phantom):
    volume = VolumeStore(progress=False).open(tiny_phantom / "test" / "kidney_6" / "images")
    engine = InferenceEngine([Member(CentreLogit(), 1, name="centre")], roi_size=32, sw_batch_size=16, views=["z"], progress=False)
    plain = np.asarray(predict_at(engine, volume, 1.0, tmp_path / "plain.npy"), dtype=np.float32)
    scaled = predict_at(engine, volume, 63.08 / 50, tmp_path / "scaled.npy", chunk=3)
    assert scaled.shape == volume.shape and scaled.dtype == np.float16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.npy", "scaled.npy"]  # work files removed
    # a pointwise model commutes with resampling, up to interpolation of a sharp phantom
    diff = np.abs(np.asarray(scaled, dtype=np.float32) - plain)
    assert diff.mean() < 0.05 and np.corrcoef(scaled.ravel(), plain.ravel())[0, 1] > 0.9
    again = predict_at(engine, volume, 63.08 / 50, tmp_path / "again.npy", chunk=7)
    np.testing.assert_array_equal(again, scaled)  # chunking does not change the result
