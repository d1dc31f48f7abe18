"""Oblique 2.5-D stacks sampled from (memory-mapped) volumes: conventions, borders, reading paths."""

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from src.data.dataset_2d import stack_slices
from src.data.oblique import oblique_stack, random_rotation, sample_points, trilinear, window_centre
from src.data.volumes import Volume

STATS = (1000.0, 50000.0)
# exact 90-degree rotations acting on (z, y, x) column vectors
ROT_Z90 = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)  # in-plane: (y, x) -> (-x, y)
ROT_X90 = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=float)  # normal -> y, rows -> -z
ROT_X90_BACK = ROT_X90.T  # normal -> -y, rows -> z


def volume(arr: np.ndarray, stats=STATS) -> Volume:
    return Volume(folder=Path("."), data=arr, first=0, suffix=".tif", stats=stats)


def random_pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60000, size=shape, dtype=np.uint16)
    label = (rng.random(shape) < 0.3).astype(np.uint8) * 255
    return volume(image), volume(label, None)


def crop(arr2d, y0, x0, size):
    return arr2d[y0 : y0 + size, x0 : x0 + size]


@pytest.mark.parametrize("method", ["auto", "box", "gather"])
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_identity_reproduces_stack_slices_and_the_label_crop(method, channels):
    image, label = random_pair((7, 20, 23))
    for z, y0, x0, size in ((3, 2, 5, 8), (0, 0, 0, 9), (6, 11, 14, 9), (1, 4, 0, 16)):
        expect = stack_slices(image, z, channels, (y0, x0, size))
        centre = window_centre(z, (y0, x0, size))
        got, mask = oblique_stack(image, label, centre, np.eye(3), size, channels, method=method)
        assert got.shape == (size, size, channels) and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, expect, rtol=0, atol=1e-6)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, crop(label.data[z], y0, x0, size) > 127)


@pytest.mark.parametrize("size", [8, 9])
def test_rotation_about_z_turns_the_stack_in_plane(size):
    image, label = random_pair((5, 21, 19), seed=1)
    z, y0, x0 = 2, 6, 4
    centre = window_centre(z, (y0, x0, size))
    axis_aligned = stack_slices(image, z, 3, (y0, x0, size))
    got, mask = oblique_stack(image, label, centre, ROT_Z90, size, 3)
    # row i, column j samples (y, x) = (y0 + size - 1 - j, x0 + i): the crop turned clockwise
    np.testing.assert_allclose(got, np.rot90(axis_aligned, k=-1, axes=(0, 1)), atol=1e-6)
    np.testing.assert_array_equal(mask, np.rot90(crop(label.data[z], y0, x0, size) > 127, k=-1))
    # scipy's 90 degrees (cos = 6e-17, not 0) lands on the same voxels
    from_scipy = Rotation.from_rotvec([np.pi / 2, 0, 0]).as_matrix()  # about the first (z) axis
    np.testing.assert_allclose(oblique_stack(image, label, centre, from_scipy, size, 3)[0], got, atol=1e-5)


def test_rotation_swapping_z_and_y_samples_the_transposed_volume():
    image, label = random_pair((12, 14, 10), seed=2)
    transposed = volume(np.ascontiguousarray(image.data.transpose(1, 0, 2)))  # (H, Z, W): slices along y
    transposed_label = np.ascontiguousarray(label.data.transpose(1, 0, 2))
    size, y, z0, x0 = 9, 6, 2, 1
    centre = (z0 + (size - 1) / 2, float(y), x0 + (size - 1) / 2)  # window_centre in the transposed volume
    expect = stack_slices(transposed, y, 3, (z0, x0, size))
    expect_mask = crop(transposed_label[y], z0, x0, size) > 127

    got, mask = oblique_stack(image, label, centre, ROT_X90, size, 3)  # rows run towards -z
    np.testing.assert_allclose(got, expect[::-1], atol=1e-6)
    np.testing.assert_array_equal(mask, expect_mask[::-1])

    got, mask = oblique_stack(image, label, centre, ROT_X90_BACK, size, 3)  # normal towards -y
    np.testing.assert_allclose(got, expect[:, :, ::-1], atol=1e-6)
    np.testing.assert_array_equal(mask, expect_mask)


def test_spacing_spreads_the_channels_along_the_normal():
    image, _ = random_pair((11, 8, 8), seed=3)
    got, _ = oblique_stack(image, None, (5.0, 3.5, 3.5), np.eye(3), 8, 3, spacing=2.0)
    for k, z in enumerate((3, 5, 7)):
        np.testing.assert_allclose(got[..., k], image.normalise(image.data[z]), atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_matches_scipy_grid_constant_and_both_reading_paths_agree(seed):
    rng = np.random.default_rng(seed)
    image, _ = random_pair((9, 13, 11), seed=seed)
    rotation = random_rotation(rng)
    centre = rng.uniform(-1, 1, 3) + np.array(image.shape) / 2 + rng.uniform(-5, 5, 3)  # often across a border
    points = sample_points(centre, rotation, 15, 3, spacing=1.5)
    reference = map_coordinates(image.data.astype(np.float64), points.reshape(3, -1), order=1, mode="grid-constant",
                                cval=STATS[0]).reshape(points.shape[1:])
    np.testing.assert_allclose(trilinear(image.data, points, STATS[0]), reference, rtol=1e-5, atol=0.05)
    box, _ = oblique_stack(image, None, centre, rotation, 15, 3, spacing=1.5, method="box")
    gather, _ = oblique_stack(image, None, centre, rotation, 15, 3, spacing=1.5, method="gather")
    np.testing.assert_array_equal(box, gather)
    np.testing.assert_allclose(box, image.normalise(reference).transpose(1, 2, 0), atol=1e-6)


def test_half_a_voxel_outside_reads_half_the_border_voxel():
    arr = np.full((1, 2, 3), 21000, np.uint16)  # normalises to 0.5
    got, _ = oblique_stack(volume(arr, (1000.0, 41000.0)), None, (0.0, 0.5, 1.0), np.eye(3), 4, 1)
    # rows sample y = -1, 0, 1, 2; columns x = -0.5, 0.5, 1.5, 2.5: half a voxel outside in x
    np.testing.assert_allclose(got[1:3, :, 0], [[0.25, 0.5, 0.5, 0.25]] * 2, atol=1e-6)
    np.testing.assert_allclose(got[[0, 3], :, 0], 0.0, atol=1e-6)  # a whole voxel outside in y
    # half a voxel outside in y and x: a quarter of the weight inside
    got, _ = oblique_stack(volume(arr, (1000.0, 41000.0)), None, (0.0, 1.0, 1.0), np.eye(3), 4, 1)
    np.testing.assert_allclose(got[2, :, 0], [0.125, 0.25, 0.25, 0.125], atol=1e-6)  # y = 1.5


def test_memmap_volume_both_paths_and_pseudo_label_threshold(tmp_path):
    rng = np.random.default_rng(5)
    shape = (10, 24, 18)
    data = np.lib.format.open_memmap(tmp_path / "img.npy", mode="w+", dtype=np.uint16, shape=shape)
    data[:] = rng.integers(0, 60000, size=shape, dtype=np.uint16)
    labels = np.lib.format.open_memmap(tmp_path / "lab.npy", mode="w+", dtype=np.uint8, shape=shape)
    labels[:] = rng.integers(0, 256, size=shape, dtype=np.uint8)  # pseudo labels 0..255
    del data, labels
    image = volume(np.load(tmp_path / "img.npy", mmap_mode="r"))
    label = volume(np.load(tmp_path / "lab.npy", mmap_mode="r"), None)
    got, mask = oblique_stack(image, label, window_centre(4, (3, 2, 12)), np.eye(3), 12, 3, threshold=100)
    np.testing.assert_allclose(got, stack_slices(image, 4, 3, (3, 2, 12)), atol=1e-6)
    np.testing.assert_array_equal(mask, crop(label.data[4], 3, 2, 12) > 100)
    rotation = random_rotation(np.random.default_rng(0), 30)
    a = oblique_stack(image, label, (5.2, 11.7, 8.1), rotation, 16, 3, threshold=100, method="box")
    b = oblique_stack(image, label, (5.2, 11.7, 8.1), rotation, 16, 3, threshold=100, method="gather")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # the mask is the thresholded trilinear label of the centre channel's plane
    plane = sample_points((5.2, 11.7, 8.1), rotation, 16, 3)[:, 1]
    lab = map_coordinates(label.data.astype(np.float64), plane.reshape(3, -1), order=1, mode="grid-constant", cval=0)
    sure = np.abs(lab - 100) > 0.01  # away from the threshold, where float32 and float64 might disagree
    np.testing.assert_array_equal(a[1].ravel()[sure], (lab > 100)[sure])


def test_non_contiguous_volume_uses_fancy_indexing_with_the_same_result():
    image, label = random_pair((8, 9, 10), seed=6)
    strided = volume(image.data.transpose(1, 0, 2).copy().transpose(1, 0, 2))  # same values, not C-contiguous
    assert not strided.data.flags.c_contiguous
    rotation = random_rotation(np.random.default_rng(1))
    a, _ = oblique_stack(image, None, (4.0, 4.3, 5.1), rotation, 11, 3, method="gather")
    b, _ = oblique_stack(strided, None, (4.0, 4.3, 5.1), rotation, 11, 3, method="gather")
    np.testing.assert_array_equal(a, b)


def test_outside_the_volume_is_zero_and_size_may_exceed_the_volume():
    image, label = random_pair((5, 6, 7), seed=7)
    got, mask = oblique_stack(image, label, (100.0, 3.0, 3.0), random_rotation(np.random.default_rng(0)), 8, 3)
    assert not got.any() and not mask.any()
    size = 21
    got, mask = oblique_stack(image, label, (2.0, 10.0, 10.0), np.eye(3), size, 3)  # y 0..20, x 0..20
    assert got.shape == (size, size, 3) and mask.shape == (size, size)
    expect = np.zeros((size, size, 3), np.float32)
    expect[:6, :7] = image.normalise(image.data[1:4]).transpose(1, 2, 0)
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert not mask[6:].any() and not mask[:, 7:].any()
    np.testing.assert_array_equal(mask[:6, :7], label.data[2] > 127)
    # a single-slice volume: the neighbours are zero, like stack_slices
    flat = volume(image.data[2:3].copy())
    np.testing.assert_allclose(oblique_stack(flat, None, (0.0, 2.5, 2.5), np.eye(3), 6, 3)[0],
                               stack_slices(flat, 0, 3, (0, 0, 6)), atol=1e-6)


def test_random_rotation_is_a_deterministic_rotation_within_the_angle():
    for max_angle in (180.0, 30.0, 5.0):
        a = [random_rotation(np.random.default_rng(11), max_angle) for _ in range(2)]
        np.testing.assert_array_equal(a[0], a[1])
        rng = np.random.default_rng(12)
        for _ in range(50):
            r = random_rotation(rng, max_angle)
            np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
            assert abs(np.linalg.det(r) - 1) < 1e-12
            assert np.degrees(Rotation.from_matrix(r).magnitude()) <= max_angle + 1e-9
    np.testing.assert_allclose(random_rotation(np.random.default_rng(0), 0.0), np.eye(3))
    # uniform over SO(3): the normal (first column) is uniform on the sphere, mean near 0, |z| mean 1/2
    rng = np.random.default_rng(13)
    normals = np.array([random_rotation(rng)[:, 0] for _ in range(2000)])
    assert np.abs(normals.mean(0)).max() < 0.06 and abs(np.abs(normals[:, 0]).mean() - 0.5) < 0.03
    # the same rng state gives the same sample
    image, label = random_pair((6, 10, 10), seed=8)
    out = []
    for _ in range(2):
        rng = np.random.default_rng(3)
        out.append(oblique_stack(image, label, (2.5, 4.5, 4.5), random_rotation(rng, 30), 8, 3))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_chunked_interpolation_equals_one_pass(monkeypatch):
    import src.data.oblique as oblique

    image, label = random_pair((9, 16, 14), seed=9)
    rotation = random_rotation(np.random.default_rng(2))
    whole = oblique_stack(image, label, (4.3, 7.9, 6.2), rotation, 20, 3)
    strided = volume(image.data.transpose(1, 0, 2).copy().transpose(1, 0, 2))
    monkeypatch.setattr(oblique, "CHUNK_POINTS", 97)  # 1200 points: 13 chunks, the last one short
    for method in ("box", "gather"):
        chunked = oblique_stack(image, label, (4.3, 7.9, 6.2), rotation, 20, 3, method=method)
        np.testing.assert_array_equal(chunked[0], whole[0])
        np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_array_equal(oblique_stack(strided, None, (4.3, 7.9, 6.2), rotation, 20, 3)[0], whole[0])
