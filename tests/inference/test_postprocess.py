import numpy as np
import pytest
from scipy import ndimage

from src.inference.postprocess import below_or_equal, postprocess_volume, remove_small_components, threshold_chunk, top_fraction_threshold
from src.utils.errors import UserError

RANKS = {6: 1, 18: 2, 26: 3}


def whole_volume_filter(mask: np.ndarray, min_size: int, connectivity: int) -> np.ndarray:
    """The reference: scipy's labelling of the whole volume, small components dropped."""
    labels, _ = ndimage.label(mask != 0, structure=ndimage.generate_binary_structure(3, RANKS[connectivity]))
    sizes = np.bincount(labels.reshape(-1))
    return ((sizes[labels] >= min_size) & (labels > 0)).astype(np.uint8)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("chunk", [1, 2, 5, 64])
def test_components_equal_whole_volume_labelling(connectivity, chunk):
    rng = np.random.default_rng(chunk * 100 + connectivity)
    for density, min_size in ((0.15, 3), (0.3, 8), (0.45, 40)):
        mask = rng.random((23, 17, 19)) < density
        got = remove_small_components(mask, min_size, chunk=chunk, connectivity=connectivity)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, whole_volume_filter(mask, min_size, connectivity))


def test_components_only_diagonal_across_the_slab_boundary():
    mask = np.zeros((4, 5, 5), np.uint8)
    mask[:2, 1, 1] = 1  # a 2-voxel rod ending in slice 1
    mask[2:, 2, 2] = 1  # another starting in slice 2, touching the first only by a corner
    assert remove_small_components(mask, 4, chunk=2, connectivity=26).sum() == 4
    assert remove_small_components(mask, 4, chunk=2, connectivity=18).sum() == 0
    assert remove_small_components(mask, 4, chunk=2, connectivity=6).sum() == 0
    mask[2:, 2, 2], mask[2:, 1, 2] = 0, 255  # now sharing an edge: 18 joins them, 6 does not
    assert remove_small_components(mask, 4, chunk=2, connectivity=18).sum() == 4
    assert remove_small_components(mask, 4, chunk=2, connectivity=6).sum() == 0


def test_component_snaking_through_many_slabs():
    mask = np.zeros((12, 6, 6), bool)
    for z in range(12):  # one component zig-zagging so that slabs see it in pieces
        mask[z, z % 6, (z // 2) % 6] = True
    mask[0, 5, 5] = True  # and an isolated voxel
    for chunk in (1, 2, 3, 5):
        got = remove_small_components(mask, 2, chunk=chunk)
        np.testing.assert_array_equal(got, whole_volume_filter(mask, 2, 26))


def test_components_min_size_one_copies_and_in_place(tmp_path):
    rng = np.random.default_rng(1)
    mask = (rng.random((9, 8, 7)) < 0.3).astype(np.uint8) * 255
    np.testing.assert_array_equal(remove_small_components(mask, 1), mask != 0)
    np.testing.assert_array_equal(remove_small_components(mask, 0, chunk=2), mask != 0)
    path = tmp_path / "mask.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=mask.shape)
    mm[:] = mask != 0
    result = remove_small_components(mm, 4, out=mm, chunk=3)  # in place, on a memory map
    assert result is mm
    del mm, result
    np.testing.assert_array_equal(np.load(path), whole_volume_filter(mask, 4, 26))


def test_components_bad_arguments():
    mask = np.zeros((3, 4, 4), bool)
    with pytest.raises(UserError):
        remove_small_components(mask, 2, connectivity=8)
    with pytest.raises(UserError):
        remove_small_components(mask, 2, chunk=0)
    with pytest.raises(UserError):
        remove_small_components(mask[0], 2)
    with pytest.raises(UserError):
        remove_small_components(mask, 2, out=np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(UserError):
        remove_small_components(mask, 2, out=np.zeros((3, 4, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("fraction", [0.002, 0.05, 0.5, 0.9])
def test_top_fraction_near_the_quantile(dtype, fraction):
    rng = np.random.default_rng(0)
    score = rng.beta(0.5, 3.0, size=(20, 30, 40)).astype(dtype)
    bins = 1024
    t = top_fraction_threshold(score, fraction, chunk=3, bins=bins)
    exact = np.quantile(score.astype(np.float64), 1 - fraction)
    assert abs(t - exact) <= 1 / bins + 1e-12
    above = (score.astype(np.float64) > t).sum()
    edges = np.linspace(0, 1, bins + 1)  # no edge gives a count closer to the target
    best = np.abs((score.astype(np.float64)[..., None] > edges).sum(axis=(0, 1, 2)) - fraction * score.size).min()
    assert abs(above - fraction * score.size) == best
    np.testing.assert_array_equal(threshold_chunk(score, t), score.astype(np.float64) > t)


def test_top_fraction_does_not_depend_on_chunk_and_takes_a_range():
    rng = np.random.default_rng(2)
    score = (rng.random((11, 13, 9)) * 2).astype(np.float16)  # a blended score, 0..2
    ts = {top_fraction_threshold(score, 0.01, chunk=c, value_range=(0, 2)) for c in (1, 4, 100)}
    assert len(ts) == 1
    with pytest.raises(UserError, match="value_range"):
        top_fraction_threshold(score, 0.01)


def test_top_fraction_edge_cases():
    score = np.zeros((4, 5, 6), np.float16)
    score[0, 0, :3] = 0.75
    assert top_fraction_threshold(score, 0.0) == 1.0
    assert top_fraction_threshold(score, 0.0, value_range=(0, 2)) == 2.0
    t = top_fraction_threshold(score, 1.0)  # every voxel, the zeros included
    assert threshold_chunk(score, t).all()
    t = top_fraction_threshold(score, 3 / score.size)
    assert threshold_chunk(score, t).sum() == 3
    for bad in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(UserError):
            top_fraction_threshold(score, bad)
    for bad_range in ((1, 0), (0, float("inf")), (0,)):
        with pytest.raises(UserError):
            top_fraction_threshold(score, 0.1, value_range=bad_range)
    with pytest.raises(UserError):
        top_fraction_threshold(score, 0.1, bins=0)
    score[1, 1, 1] = np.nan
    with pytest.raises(UserError):
        top_fraction_threshold(score, 0.1)


def test_threshold_comparison_is_exact_for_every_dtype():
    t = 0.1  # not a float16 or float32 value
    for dtype in (np.float16, np.float32):
        below = below_or_equal(dtype, t)
        assert float(below) <= t < float(np.nextafter(below, dtype(np.inf)))
    values = np.array([0, 1, 2, 200, 255], np.uint8)
    np.testing.assert_array_equal(threshold_chunk(values, 1.5), values > 1.5)
    np.testing.assert_array_equal(threshold_chunk(values, -3), np.ones(5, bool))
    np.testing.assert_array_equal(threshold_chunk(values, 300), np.zeros(5, bool))


@pytest.mark.parametrize("chunk", [1, 4, 50])
def test_postprocess_volume_matches_whole_volume(chunk):
    rng = np.random.default_rng(3)
    score = ndimage.gaussian_filter(rng.random((14, 21, 18)), 1.0).astype(np.float16)
    mask, t = postprocess_volume(score, threshold=0.5, min_component_size=5, chunk=chunk)
    assert t == 0.5
    np.testing.assert_array_equal(mask, whole_volume_filter(score.astype(np.float64) > 0.5, 5, 26))
    mask, t = postprocess_volume(score, "top_fraction", top_fraction=0.1, chunk=chunk)
    assert abs(t - np.quantile(score.astype(np.float64), 0.9)) <= 1 / 4096
    np.testing.assert_array_equal(mask, score.astype(np.float64) > t)


def test_postprocess_volume_memmap_in_and_out(tmp_path):
    rng = np.random.default_rng(4)
    score = ndimage.gaussian_filter(rng.random((12, 16, 15)), 1.2).astype(np.float16)
    np.save(tmp_path / "score.npy", score)
    mapped = np.load(tmp_path / "score.npy", mmap_mode="r")
    out = np.lib.format.open_memmap(tmp_path / "mask.npy", mode="w+", dtype=np.uint8, shape=score.shape)
    mask, t = postprocess_volume(mapped, "top_fraction", top_fraction=0.2, min_component_size=6, out=out, chunk=5)
    assert mask is out
    del mask, out
    expected = whole_volume_filter(score.astype(np.float64) > t, 6, 26)
    np.testing.assert_array_equal(np.load(tmp_path / "mask.npy"), expected)
    assert expected.any()


def test_postprocess_volume_bad_arguments():
    score = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(UserError, match="threshold_mode"):
        postprocess_volume(score, "otsu")
    with pytest.raises(UserError):
        postprocess_volume(score, threshold="high")
    with pytest.raises(UserError):
        postprocess_volume(score, "top_fraction", top_fraction=2.0)
    with pytest.raises(UserError):
        postprocess_volume(score[0])
    with pytest.raises(UserError):
        postprocess_volume(score, out=np.zeros((2, 3, 4), np.uint8))
