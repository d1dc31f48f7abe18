import numpy as np
import pytest

from src.data.transforms_3d import IntensityAugmentation3D
from src.utils.errors import UserError


def crop(seed=1, shape=(16, 16, 16)):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_d4_leaves_intensities_alone():
    image = crop()
    assert IntensityAugmentation3D("d4")(image, np.random.default_rng(0)) is image


def test_robust_changes_intensities_within_the_normalised_range_and_keeps_the_shape():
    image = crop(shape=(8, 16, 24))
    rng = np.random.default_rng(0)
    outs = [IntensityAugmentation3D("robust")(image, rng) for _ in range(20)]
    for out in outs:
        assert out.shape == image.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    changed = [not np.allclose(out, image) for out in outs]
    assert sum(changed) >= 15  # only a crop that draws identity, no shading, no noise and no blur stays as it was
    means = [float(out.mean()) for out in outs]
    assert max(means) - min(means) > 0.05  # brightness / contrast / gamma really vary between crops


def test_robust_follows_the_generator():
    image = crop()
    a = IntensityAugmentation3D("robust")(image, np.random.default_rng(7))
    b = IntensityAugmentation3D("robust")(image, np.random.default_rng(7))
    c = IntensityAugmentation3D("robust")(image, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_an_unknown_scheme_is_one_clear_error():
    with pytest.raises(UserError, match=r"data.aug: unknown 'robst' \(did you mean 'robust'\?\)"):
        IntensityAugmentation3D("robst")
