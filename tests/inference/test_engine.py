import numpy as np
import pytest
import torch

from src.data.volumes import VolumeStore
from src.inference.checkpoints import Member
from src.inference.engine import InferenceEngine, reflect_pad_to
from src.utils.errors import UserError
from tests.inference.helpers import CentreLogit, Constant


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
    with pytest.raises(UserError, match="engine.views: unknown 'q'; choose one of z, xz, zy"):
        InferenceEngine([Member(CentreLogit(), 3)], views=("q",))
    with pytest.raises(UserError, match="tta: unknown 'd8'; choose one of none, flip, d4"):
        engine([Member(CentreLogit(), 3, tta="d8")])


def test_blocks_and_memory_maps_give_the_in_memory_result(volume, tmp_path):
    torch.manual_seed(2)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    in_ram = engine([Member(net, 3)]).predict(volume)
    blocked = engine([Member(net, 3)], block_bytes=1, slices_per_batch=3).predict(volume, out=tmp_path / "p.npy")
    np.testing.assert_array_equal(np.asarray(blocked), in_ram)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy"]  # work files and temporaries are gone


# --------------------------------------------------------------------------- pipeline, devices, windows
from src.inference.engine import padded_window, resolve_devices  # noqa: E402
from src.inference.tta import with_tta  # noqa: E402


@pytest.mark.parametrize("kw", [{"block_bytes": 1, "slices_per_batch": 3}, {"prefetch": 3}, {"devices": ["cpu", "cpu"], "block_bytes": 1}])
def test_pipelined_and_multi_device_results_equal_the_synchronous_path(volume, tmp_path, kw):
    """Reader and writer threads, several blocks in flight and two workers change nothing (fp32, bit for bit)."""
    torch.manual_seed(3)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    serial = engine([Member(net, 3, tta="flip")], pipeline=False).predict(volume)
    other = engine([Member(net, 3, tta="flip")], **kw).predict(volume, out=tmp_path / "p.npy")
    np.testing.assert_array_equal(np.asarray(other), serial)


def test_two_workers_share_the_blocks_and_the_progress_file_is_a_contiguous_prefix(volume, tmp_path):
    seen = []

    class Counting(CentreLogit):
        def forward(self, x):
            seen.append(x.shape[0])
            return super().forward(x)

    e = engine([Member(Counting(), 3)], devices=["cpu", "cpu"], block_bytes=1, slices_per_batch=2, views=("z",))
    assert len(e.replicas) == 2 and e.replicas[1].nets[0] is not e.replicas[0].nets[0]  # a copy per worker
    written = []
    e.predict_view(volume, "z", lambda b0, b1, p: written.append((b0, b1)))
    assert sorted(written) == e.blocks_of(volume, "z") and len(set(written)) == len(written)  # each block once
    maps = e.view_maps(volume, tmp_path)
    assert (tmp_path / "z.next").read_text() == str(volume.shape[0])
    np.testing.assert_allclose(maps[0].astype(np.float32), expected_centre(volume), atol=2e-3)


def test_an_error_in_the_network_surfaces_and_earlier_blocks_are_written(volume):
    calls = []

    class Failing(CentreLogit):
        def forward(self, x):
            calls.append(1)
            if len(calls) > 3:
                raise RuntimeError("device lost")
            return super().forward(x)

    written = []
    e = engine([Member(Failing(), 3)], block_bytes=1, slices_per_batch=2, sw_batch_size=64, views=("z",))
    with pytest.raises(RuntimeError, match="device lost"):
        e.predict_view(volume, "z", lambda b0, b1, p: written.append((b0, b1)))
    assert written == e.blocks_of(volume, "z")[: len(written)] and len(written) >= 2


def test_thin_sides_are_padded_to_the_network_multiple_not_the_roi():
    assert padded_window((48, 1303), (800, 800), 32) == ((64, 1303), (64, 800))
    assert padded_window((3, 900), (512, 512), 32) == ((32, 900), (32, 512))
    assert padded_window((900, 1000), (512, 512), 32) == ((900, 1000), (512, 512))
    assert padded_window((500, 20), (512, 512), 32) == ((512, 32), (512, 32))


def test_flip_tta_runs_in_one_forward_and_d4_in_one_per_shape():
    batches = []

    def predict(t):
        batches.append(tuple(t.shape))
        return t[:, :1] * 2

    x = torch.rand(2, 3, 8, 12)
    y = with_tta(predict, x, "flip")
    assert batches == [(6, 3, 8, 12)]
    torch.testing.assert_close(y, x[:, :1] * 2)
    batches.clear()
    y = with_tta(predict, x, "d4")
    assert sorted(batches) == [(8, 3, 8, 12), (8, 3, 12, 8)]
    torch.testing.assert_close(y, x[:, :1] * 2)


def test_device_lists():
    cpu = torch.device("cpu")
    assert resolve_devices(None, cpu) == [cpu]
    if not torch.cuda.is_available():
        assert resolve_devices("auto", cpu) == [cpu]
        with pytest.raises(UserError, match="GPU"):
            resolve_devices(2, cpu)
    assert resolve_devices(["cpu", "cpu"], cpu) == [cpu, cpu]
    with pytest.raises(UserError, match="engine.devices"):
        resolve_devices("many", cpu)


from src.inference.engine import FixedBatch  # noqa: E402


def test_fixed_batch_pads_short_batches_and_returns_only_the_real_windows():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 1, 1)).eval()
    seen, counts = [], {"windows": 0, "padding": 0}

    def recording(x):
        seen.append(x.shape[0])
        return net(x)

    fixed = FixedBatch(recording, 8, counts)
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        out = fixed(x)
        full = fixed(torch.rand(8, 3, 16, 16))
    assert seen == [8, 8] and out.shape == (5, 1, 16, 16) and full.shape == (8, 1, 16, 16)
    torch.testing.assert_close(out, net(x).detach())
    assert counts == {"windows": 13, "padding": 3}


def test_window_batch_is_capped_by_the_windows_of_one_forward():
    engine = InferenceEngine([Member(CentreLogit(), 3)], roi_size=512, sw_batch_size=8, slices_per_batch=4, progress=False,
                             device="cpu")
    assert engine.window_batch((1303, 912), (512, 512)) == 8  # 12 windows a slice: full batches of 8
    # an xz slice of a 64-slice volume: windows 64x512 (1/8 of the roi), 3 a slice, 17 slices a forward
    assert engine.slices_per_forward((64, 912)) == 17
    assert engine.window_batch((64, 912), (512, 512)) == 51  # not the 64 the area alone allows


@pytest.mark.parametrize("tta", ["none", "d4"])
def test_fixed_batches_give_the_unpadded_result_on_every_view(volume, tta):
    """The CUDA path (short window batches padded to one shape) forced on the CPU: every view, thin ones
    included, and TTA groups of non-square windows predict what the unpadded path predicts."""
    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1)).eval()
    kw = {"roi_size": 48, "sw_batch_size": 3, "slices_per_batch": 2, "pipeline": False}
    plain = engine([Member(net, 3, tta=tta)], fixed_batch=False, **kw)
    fixed = engine([Member(net, 3, tta=tta)], fixed_batch=True, **kw)
    expected, got = plain.predict(volume), fixed.predict(volume)
    assert fixed.window_counts["padding"] > 0 and plain.window_counts == {"windows": 0, "padding": 0}
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=1e-3)
