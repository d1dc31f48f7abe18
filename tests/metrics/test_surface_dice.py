import math

import numpy as np
import pytest
import torch

from src.metrics.surface_dice import SurfaceDiceAccumulator, area_table, score_from_histogram, surface_dice
from tests.metrics.reference import reference_surface_dice


def surface_dice_stream(pairs, chunk: int = 32, device="cpu") -> float:
    """Surface Dice of a volume given as an iterable of (prediction slice, truth slice) in slice order."""
    acc = SurfaceDiceAccumulator(device)
    preds, trues = [], []
    for p, t in pairs:
        preds.append(np.asarray(p) != 0)
        trues.append(np.asarray(t) != 0)
        if len(preds) == chunk:
            acc.update(np.stack(preds), np.stack(trues))
            preds, trues = [], []
    if preds:
        acc.update(np.stack(preds), np.stack(trues))
    return acc.score()


def ball(shape, centre, radius):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def tube(shape, y, x, radius):
    z, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return np.broadcast_to((yy - y) ** 2 + (xx - x) ** 2 <= radius**2, shape).copy()


def pairs():
    rng = np.random.default_rng(0)
    yield "random", rng.random((9, 17, 23)) < 0.3, rng.random((9, 17, 23)) < 0.4
    yield "random_sparse", rng.random((12, 31, 5)) < 0.02, rng.random((12, 31, 5)) < 0.05
    yield "balls", ball((20, 33, 29), (10, 16, 14), 8), ball((20, 33, 29), (9, 17, 13), 7.5)
    yield "tubes", tube((15, 40, 21), 20, 10, 4), tube((15, 40, 21), 21, 10, 3)
    a, b = ball((16, 20, 24), (8, 10, 12), 6), ball((16, 20, 24), (8, 10, 12), 6)
    a[5:9] = False  # empty slices inside the volume
    yield "empty_slices", a, b
    single = np.zeros((5, 6, 7), bool)
    single[2, 3, 4] = True
    yield "single_voxel_same", single, single.copy()
    other = np.zeros((5, 6, 7), bool)
    other[2, 3, 5] = True
    yield "single_voxel_shifted", single, other
    yield "pred_empty", np.zeros((6, 8, 9), bool), ball((6, 8, 9), (3, 4, 4), 2)
    yield "touching_borders", np.ones((4, 5, 6), bool), rng.random((4, 5, 6)) < 0.7
    yield "one_slice", rng.random((1, 40, 30)) < 0.5, rng.random((1, 40, 30)) < 0.5


@pytest.mark.parametrize("name, pred, true", list(pairs()), ids=[p[0] for p in pairs()])
def test_equals_deepmind_reference(name, pred, true):
    expected = reference_surface_dice(pred, true)
    for chunk in (1, 3, 64):
        assert surface_dice(pred, true, chunk=chunk) == pytest.approx(expected, abs=1e-6)


def test_both_empty_is_nan_and_perfect_is_one():
    empty = np.zeros((4, 5, 6), bool)
    assert math.isnan(surface_dice(empty, empty))
    b = ball((10, 11, 12), (5, 5, 6), 4)
    assert surface_dice(b, b) == pytest.approx(1.0)
    assert surface_dice(np.zeros_like(b), b) == 0.0


def test_symmetric_and_accepts_uint8_and_tensors():
    rng = np.random.default_rng(1)
    a, b = rng.random((6, 10, 12)) < 0.3, rng.random((6, 10, 12)) < 0.3
    s = surface_dice(a, b)
    assert surface_dice(b, a) == pytest.approx(s, abs=1e-12)
    assert surface_dice(a.astype(np.uint8) * 255, b.astype(np.uint8)) == pytest.approx(s, abs=1e-12)
    assert surface_dice(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(s, abs=1e-12)


def test_stream_of_slices_matches_volume():
    rng = np.random.default_rng(2)
    a, b = rng.random((11, 9, 8)) < 0.4, rng.random((11, 9, 8)) < 0.4
    assert surface_dice_stream(zip(a, b), chunk=4) == pytest.approx(surface_dice(a, b), abs=1e-12)


def test_split_ranges_merge_exactly():
    """Two slice ranges scored separately (the second starting from the first's last slice) add up exactly."""
    rng = np.random.default_rng(3)
    a, b = rng.random((10, 12, 13)) < 0.4, rng.random((10, 12, 13)) < 0.4
    whole = SurfaceDiceAccumulator()
    whole.update(a, b)
    first = SurfaceDiceAccumulator()
    first.update(a[:4], b[:4])
    second = SurfaceDiceAccumulator(start_pred=a[3], start_true=b[3])
    second.update(a[4:], b[4:])
    second.close()
    first.merge(second)  # the first range stays open: its last slice continues in the second
    whole.close()
    assert torch.equal(first.hist, whole.hist)
    assert score_from_histogram(first.hist) == whole.score()


def test_area_table_matches_deepmind():
    from surface_distance import lookup_tables

    expected = lookup_tables.create_table_neighbour_code_to_surface_area((1.0, 1.0, 1.0))
    np.testing.assert_allclose(area_table().numpy(), expected, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    rng = np.random.default_rng(4)
    a, b = rng.random((8, 30, 20)) < 0.3, rng.random((8, 30, 20)) < 0.3
    gpu = surface_dice(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda())
    assert gpu == pytest.approx(surface_dice(a, b), abs=1e-12)
