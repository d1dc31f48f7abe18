import numpy as np
import pytest
import torch

from src.data.volumes import VolumeStore
from src.inference.blend import blend_score_slice, roi_mask
from src.inference.checkpoints import Member, load_member_3d
from src.inference.engine3d import Engine3D
from src.utils.errors import UserError
from tests.inference.helpers import write_checkpoint, write_checkpoint_3d


def blend_slice(p2d, p3d, mode="roi", threshold=0.55, hull_threshold=0.05, kernel=5, iterations=5, weight_2d=1.0, weight_3d=1.0):
    """The blend's mask written directly as the 4th place's notebook does (the reference for the score)."""
    p2d, p3d = np.asarray(p2d, dtype=np.float32), np.asarray(p3d, dtype=np.float32)
    if mode == "average":
        return (weight_2d * p2d + weight_3d * p3d) / (weight_2d + weight_3d) > threshold
    region = roi_mask(p2d, hull_threshold, kernel, iterations)
    if region is None:
        return p2d > hull_threshold
    return (region * p3d + p2d) > threshold


def square_case(p3d_value):
    p2d = np.zeros((60, 60), np.float32)
    p2d[20:30, 20:30] = 0.3
    return p2d, np.full((60, 60), p3d_value, np.float32)


def test_roi_blend_on_a_hand_made_slice():
    p2d, p3d = square_case(0.4)
    mask = blend_slice(p2d, p3d)  # inside the square 0.3 + 0.4 > 0.55, around it only 0.4
    np.testing.assert_array_equal(mask, p2d > 0)
    p2d, p3d = square_case(0.6)
    mask = blend_slice(p2d, p3d)  # now the 3-D probability alone passes, but only inside the dilated hull
    assert mask[25, 25] and mask[14, 25] and mask[25, 35]
    assert not mask[2, 2] and not mask[25, 55] and not mask[55, 55]
    region = roi_mask(p2d)
    np.testing.assert_array_equal(mask, region.astype(bool))
    assert region[20:30, 20:30].all() and region.sum() < 60 * 60 / 2


def test_no_contour_falls_back_to_the_2d_mask():
    p2d = np.full((32, 32), 0.01, np.float32)
    assert roi_mask(p2d) is None
    assert not blend_slice(p2d, np.ones_like(p2d)).any()


def test_average_blend_and_bad_mode():
    p2d, p3d = np.full((4, 4), 0.4, np.float32), np.full((4, 4), 0.8, np.float32)
    assert blend_slice(p2d, p3d, mode="average", threshold=0.55).all()  # (0.4 + 0.8) / 2 = 0.6
    assert not blend_slice(p2d, p3d, mode="average", threshold=0.55, weight_2d=3).any()  # (1.2 + 0.8) / 4 = 0.5
    with pytest.raises(UserError, match="blend.mode: unknown 'max'"):
        blend_score_slice(p2d, p3d, mode="max")


@pytest.fixture(scope="module")
def volume(tiny_phantom):
    return VolumeStore(progress=False).open(tiny_phantom / "test" / "kidney_5" / "images")


def test_3d_engine_shape_range_slabs_and_tta(volume, tmp_path):
    torch.manual_seed(0)
    pointwise = torch.nn.Conv3d(1, 1, 1)  # commutes with flips and rotations
    whole = Engine3D([Member(pointwise, 1)], roi_size=16, slab=1000, progress=False).predict(volume)
    assert whole.shape == volume.shape and whole.dtype == np.float16 and 0 <= whole.min() and whole.max() <= 1
    slabs = Engine3D([Member(pointwise, 1)], roi_size=16, slab=5, progress=False).predict(volume, out=tmp_path / "p.npy")
    np.testing.assert_allclose(np.asarray(slabs, np.float32), whole.astype(np.float32), atol=2e-3)
    for tta in ("flip", "d4"):
        aug = Engine3D([Member(pointwise, 1, tta=tta)], roi_size=16, progress=False).predict(volume)
        np.testing.assert_allclose(aug.astype(np.float32), whole.astype(np.float32), atol=2e-3)


def test_3d_checkpoint_members(tmp_path):
    path, net = write_checkpoint_3d(tmp_path / "3d.ckpt")
    member = load_member_3d(path, weight=2.0, tta="d4")
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(member.net(x), net(x))
    assert member.weight == 2.0 and member.tta == "d4"
    two_d, _ = write_checkpoint(tmp_path / "2d.ckpt")
    with pytest.raises(UserError, match="not a 3-D DynUNet checkpoint"):
        load_member_3d(two_d)


def test_blend_score_thresholds_to_the_blend_mask():
    rng = np.random.default_rng(0)
    p3d = rng.random((64, 64)).astype(np.float16)
    p2d = np.zeros((64, 64), np.float16)
    p2d[20:40, 10:30] = rng.random((20, 20))
    empty = np.full((64, 64), 0.01, np.float16)  # no contour: the fallback p2d > 0.05
    for a in (p2d, empty, rng.random((64, 64)).astype(np.float16)):
        for mode in ("roi", "average"):
            score = blend_score_slice(a, p3d, mode=mode, weight_3d=2.0)
            np.testing.assert_array_equal(score > 0.55, blend_slice(a, p3d, mode=mode, weight_3d=2.0))
