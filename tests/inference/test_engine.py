import numpy as np
import pytest
import torch

from src.data.volumes import VolumeStore
from src.inference.checkpoints import Member
from src.inference.engine import InferenceEngine, reflect_pad_to
from src.utils.errors import UserError
from tests.inference.helpers import Constant, CentreLogit


@pytest.fixture(scope="module")
def volume(tiny_phantom):
    return VolumeStore(progress=False).open(tiny_phantom / "test" / "kidney_5" / "images")


def expected_centre(volume):
    return 1 / (1 + np.exp(-(volume.normalise(volume.data) - 0.5) * 10))


def engine(members, **kw):
    return InferenceEngine(members, **{"roi_size": 32, "sw_batch_size": 16, "progress": False, **kw})


def test_output_shape_dtype_and_range(volume):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    prob = engine([Member(net, 3)]).predict(volume)
    assert prob.shape == volume.shape and prob.dtype == np.float16
    assert prob.min() >= 0 and prob.max() <= 1 and prob.std() > 0


@pytest.mark.parametrize("views", [("z",), ("xz",), ("zy",), ("z", "xz", "zy")])
def test_every_view_maps_back_to_the_volume(volume, views):
    """A pointwise model predicts the same value for a voxel from every view: any transposition error shows."""
    prob = engine([Member(CentreLogit(), 3)], views=views).predict(volume)
    np.testing.assert_allclose(prob.astype(np.float32), expected_centre(volume), atol=2e-3)


def test_one_three_and_five_channel_models_together(volume):
    members = [Member(CentreLogit(), 1), Member(CentreLogit(), 3, 2.0), Member(CentreLogit(), 5, 0.5)]
    prob = engine(members).predict(volume)
    np.testing.assert_allclose(prob.astype(np.float32), expected_centre(volume), atol=2e-3)


def test_neighbour_channels_are_the_neighbouring_slices(volume):
    """A model returning its first channel sees slice i-1 (zeros before the first) in every view."""

    class First(torch.nn.Module):
        def forward(self, x):
            return (x[:, :1] - 0.5) * 10

    prob = engine([Member(First(), 3)], views=("z",)).predict(volume).astype(np.float32)
    expected = expected_centre(volume)
    np.testing.assert_allclose(prob[1:], expected[:-1], atol=2e-3)
    np.testing.assert_allclose(prob[0], 1 / (1 + np.exp(5)), atol=2e-3)  # zeros beyond the end


@pytest.mark.parametrize("tta", ["flip", "d4"])
def test_tta_of_an_equivariant_model_changes_nothing(volume, tta):
    torch.manual_seed(1)
    pointwise = torch.nn.Conv2d(3, 1, 1)  # commutes with flips and rotations
    plain = engine([Member(pointwise, 3, tta="none")], views=("z", "zy")).predict(volume)
    augmented = engine([Member(pointwise, 3, tta=tta)], views=("z", "zy")).predict(volume)
    np.testing.assert_allclose(augmented.astype(np.float32), plain.astype(np.float32), atol=2e-3)


def test_weighted_mean_of_logits_then_sigmoid(volume):
    prob = engine([Member(Constant(2.0), 3, 1.0), Member(Constant(-1.0), 1, 2.0)], views=("z",)).predict(volume)
    assert np.allclose(prob.astype(np.float32), 0.5, atol=1e-3)  # (2 * 1 - 1 * 2) / 3 = 0


def test_memory_mapped_output_and_three_slice_volumes(volume, tmp_path):
    three = volume.sub(volume.first, volume.first + 2)  # the public download: 3 slices per kidney
    out = tmp_path / "prob.npy"
    prob = engine([Member(CentreLogit(), 3)], roi_size=64).predict(three, out=out)
    assert isinstance(prob, np.memmap) and prob.shape == (3, *volume.shape[1:])
    assert not list(tmp_path.glob("*.tmp-*"))
    np.testing.assert_allclose(prob.astype(np.float32), expected_centre(three), atol=2e-3)


def test_reflect_padding_larger_than_the_image():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    padded, (top, bottom, left, right) = reflect_pad_to(x, (9, 8))
    assert padded.shape == (1, 1, 9, 8) and (top, bottom, left, right) == (3, 4, 2, 3)
    torch.testing.assert_close(padded[..., top : top + 2, left : left + 3], x)


def test_bad_engine_settings():
    with pytest.raises(UserError, match="at least one model"):
        InferenceEngine([])
    with pytest.raises(UserError, match="unknown view"):
        InferenceEngine([Member(CentreLogit(), 3)], views=("q",))
    with pytest.raises(UserError, match="unknown test-time augmentation"):
        engine([Member(CentreLogit(), 3, tta="d8")]).logits({3: torch.zeros(1, 3, 8, 8)})


def test_blocks_and_memory_maps_give_the_in_memory_result(volume, tmp_path):
    torch.manual_seed(2)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    in_ram = engine([Member(net, 3)]).predict(volume)
    blocked = engine([Member(net, 3)], block_bytes=1, slices_per_batch=3).predict(volume, out=tmp_path / "p.npy")
    np.testing.assert_array_equal(np.asarray(blocked), in_ram)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy"]  # work files and temporaries are gone
