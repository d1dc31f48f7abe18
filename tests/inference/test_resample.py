import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.inference.resample import linear_weights, resample_to_file, resample_volume, resampled_shape
from src.utils.errors import UserError

UP = 63.08 / 50  # 1.2616


def smooth_volume(shape, dtype=np.float32) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    return (0.5 + 0.2 * np.sin(3 * z + 1) * np.cos(2 * y) + 0.2 * np.sin(2.5 * x + z)).astype(dtype)


def torch_trilinear(x: np.ndarray, shape) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0].numpy()


def test_resampled_shapes():
    assert resampled_shape((7, 13, 10), UP) == (9, 16, 13)
    assert resampled_shape((7, 13, 10), 1 / UP) == (6, 10, 8)
    assert resampled_shape((2000, 1700, 1500), UP) == (2523, 2145, 1892)
    assert resampled_shape((9, 9, 9), 0.5) == (5, 5, 5)  # 4.5 rounds up
    assert resampled_shape((3, 4, 5), 0.01) == (1, 1, 1)
    assert resampled_shape((3, 4, 5), (1, 2, 0.5)) == (3, 8, 3)
    for bad in (0, -1.0, float("nan"), "x", (1, 2)):
        with pytest.raises(UserError):
            resampled_shape((3, 4, 5), bad)
    with pytest.raises(UserError):
        resampled_shape((3, 4), 2.0)


@pytest.mark.parametrize("factor", [UP, 1 / UP])
@pytest.mark.parametrize("shape", [(7, 13, 10), (5, 9, 16), (1, 3, 2)])
def test_shapes_exact_and_matches_torch(factor, shape):
    rng = np.random.default_rng(0)
    src = rng.random(shape, dtype=np.float32)
    target = resampled_shape(shape, factor)
    got = resample_volume(src, target, chunk=4)
    assert got.shape == target and got.dtype == np.float32
    np.testing.assert_allclose(got, torch_trilinear(src, target), rtol=0, atol=1e-5)


def test_closer_to_float64_trilinear_than_torch_float32():
    rng = np.random.default_rng(6)
    src = rng.integers(0, 65536, size=(10, 15, 12), dtype=np.uint16)
    target = resampled_shape(src.shape, UP)
    t = torch.from_numpy(src.astype(np.float64))[None, None]
    exact = F.interpolate(t, size=target, mode="trilinear", align_corners=False)[0, 0].numpy()
    ours = np.abs(resample_volume(src, target, dtype=np.float32) - exact).max()
    torch32 = np.abs(torch_trilinear(src, target) - exact).max()
    assert ours < 2e-7 * 65535 and ours <= torch32


def test_matches_torch_for_uneven_factors_per_axis():
    rng = np.random.default_rng(1)
    src = rng.random((11, 20, 17), dtype=np.float32)
    for target in ((4, 33, 6), (23, 7, 40), (11, 20, 3), (1, 1, 1)):
        np.testing.assert_allclose(resample_volume(src, target), torch_trilinear(src, target), rtol=0, atol=1e-5)


def test_linear_weights_half_pixel_convention():
    i0, i1, w = linear_weights(4, 8)  # upsampling by 2: coordinates -0.25 (clamped), 0.25, 0.75, ...
    np.testing.assert_array_equal(i0, [0, 0, 0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(i1, [1, 1, 1, 2, 2, 3, 3, 3])
    np.testing.assert_allclose(w, [0, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0])
    i0, i1, w = linear_weights(4, 2)  # downsampling by 2: the mean of each pair
    np.testing.assert_array_equal(i0, [0, 2])
    np.testing.assert_allclose(w, [0.5, 0.5])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_identity_is_an_exact_copy(dtype):
    rng = np.random.default_rng(2)
    src = (rng.random((6, 7, 8)) * 200).astype(dtype)
    got = resample_volume(src, src.shape, chunk=4)
    assert got.dtype == src.dtype
    np.testing.assert_array_equal(got, src)
    # also through the interpolation path (same grid, another output dtype): still exact
    np.testing.assert_array_equal(resample_volume(src, src.shape, dtype=np.float32), src.astype(np.float32))


def test_round_trip_is_close_on_a_smooth_volume():
    src = smooth_volume((24, 40, 36))
    up = resample_volume(src, resampled_shape(src.shape, UP))
    back = resample_volume(up, src.shape)
    inner = (slice(2, -2),) * 3
    assert np.abs(back - src)[inner].max() < 5e-3
    assert np.abs(back - src).max() < 2e-2


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_result_does_not_depend_on_chunk(dtype):
    rng = np.random.default_rng(3)
    src = (rng.random((9, 14, 11)) * 250).astype(dtype)
    for target in (resampled_shape(src.shape, UP), resampled_shape(src.shape, 1 / UP), (20, 5, 30)):
        results = [resample_volume(src, target, chunk=c) for c in (1, 3, 100)]
        for other in results[1:]:
            np.testing.assert_array_equal(results[0], other)


def test_integer_output_is_rounded_and_clipped():
    src = np.zeros((2, 2, 2), np.float32)
    src[0] = [[-5.0, 0.4], [0.6, 300.0]]
    src[1] = [[1.5, 2.5], [254.6, 70000.0]]
    np.testing.assert_array_equal(resample_volume(src, (2, 2, 2), dtype=np.uint8),
                                  [[[0, 0], [1, 255]], [[2, 2], [255, 255]]])  # rint: halves to even
    np.testing.assert_array_equal(resample_volume(src, (2, 2, 2), dtype=np.uint16)[1], [[2, 2], [255, 65535]])
    rng = np.random.default_rng(4)
    src = rng.integers(0, 65536, size=(6, 10, 9), dtype=np.uint16)
    target = resampled_shape(src.shape, UP)
    got = resample_volume(src, target)
    assert got.dtype == np.uint16
    expected = np.clip(np.rint(torch_trilinear(src, target)), 0, 65535)
    assert np.abs(got.astype(np.int64) - expected).max() <= 1  # only float rounding at .5 may differ
    src8 = rng.integers(0, 256, size=(6, 10, 9), dtype=np.uint8)
    got8 = resample_volume(src8, target)
    assert got8.dtype == np.uint8
    assert np.abs(got8.astype(np.int64) - np.rint(torch_trilinear(src8, target))).max() <= 1


def test_float16_source_and_output():
    src = smooth_volume((8, 12, 10), np.float16)
    target = resampled_shape(src.shape, UP)
    got = resample_volume(src, target)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), torch_trilinear(src, target), atol=1e-3)


def test_memmap_input_and_output(tmp_path):
    rng = np.random.default_rng(5)
    src = rng.integers(0, 65536, size=(10, 15, 12), dtype=np.uint16)
    np.save(tmp_path / "src.npy", src)
    mapped = np.load(tmp_path / "src.npy", mmap_mode="r")
    target = resampled_shape(src.shape, UP)
    expected = resample_volume(src, target)
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.uint16, shape=target)
    assert resample_volume(mapped, target, out=out, chunk=4) is out
    del out
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    result = resample_to_file(mapped, target, tmp_path / "sub" / "file.npy", chunk=3, dtype=np.float32)
    assert isinstance(result, np.memmap) and result.dtype == np.float32 and result.shape == target
    # torch's float32 trilinear computes its weights in float32: ~1e-6 of the value range apart
    np.testing.assert_allclose(result, torch_trilinear(src, target), rtol=0, atol=1e-6 * 65535)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["file.npy"]  # no temporary left


def test_resample_to_file_leaves_nothing_on_error(tmp_path):
    with pytest.raises(UserError):
        resample_to_file(np.zeros((2, 3, 4), np.int32), (4, 6, 8), tmp_path / "x.npy")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    src = np.zeros((3, 4, 5), np.float32)
    with pytest.raises(UserError):
        resample_volume(src[0], (2, 2))
    with pytest.raises(UserError):
        resample_volume(src, (2, 2, 0))
    with pytest.raises(UserError):
        resample_volume(src, (2, 2, 2), chunk=0)
    with pytest.raises(UserError):
        resample_volume(src, (2, 2, 2), dtype=np.int64)
    with pytest.raises(UserError):
        resample_volume(src.astype(np.float64), (2, 2, 2))
    with pytest.raises(UserError):
        resample_volume(src, (2, 2, 2), out=np.zeros((2, 2, 3), np.float32))
    with pytest.raises(UserError):
        resample_volume(src, (2, 2, 2), out=np.zeros((2, 2, 2), np.float32), dtype=np.uint8)
