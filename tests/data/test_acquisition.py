"""The phantom's acquisition model and styles (src.data.phantom.acquisition)."""

import numpy as np
import pytest

from src.data.phantom import KIDNEYS, build_phantom, grid_shape, kidney_extent_mm, render_kidney
from src.data.phantom.acquisition import STYLES, PhantomStyle, acquire, integrate_voxels, ring_pattern, style_of
from src.utils.errors import UserError


def test_voxel_integration_is_the_block_mean():
    fine = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    coarse = integrate_voxels(fine, 2)
    assert coarse.shape == (2, 3, 4)
    assert coarse[1, 2, 3] == pytest.approx(fine[2:4, 4:6, 6:8].mean())
    assert integrate_voxels(fine, 1) is fine


def test_thin_vessel_is_partial_volume_faint_not_point_sampled():
    """A one-fine-voxel line acquired at oversample 2 covers a quarter of each acquired voxel it crosses."""
    fine = np.zeros((8, 8, 8), dtype=np.float32)
    fine[:, 2, 2] = 1.0
    assert integrate_voxels(fine, 2)[:, 1, 1] == pytest.approx(np.full(4, 0.25))


def test_noise_falls_with_dose_and_with_voxel_size():
    flat = np.full((16, 32, 32), 0.3, dtype=np.float32)
    def noise(style, voxel_um):
        return float(acquire(flat, style, voxel_um, np.random.default_rng(0)).std())
    quiet = PhantomStyle("q", "", oversample=1, gain_range=(1, 1), offset_range=(0, 0), shading_amplitude=0, psf_voxels=0,
                         dose=2000.0, read_noise=0.0)
    loud = PhantomStyle("l", "", oversample=1, gain_range=(1, 1), offset_range=(0, 0), shading_amplitude=0, psf_voxels=0,
                        dose=100.0, read_noise=0.0)
    assert noise(loud, 50.0) == pytest.approx(np.sqrt(0.3 / 100.0), rel=0.05)  # Poisson: var = I / dose
    assert noise(quiet, 50.0) < noise(loud, 50.0) / 3
    assert noise(loud, 63.08) == pytest.approx(noise(loud, 50.0) * 50.0 / 63.08, rel=0.05)  # dose per voxel ~ area


def test_rings_are_concentric_and_signed():
    rings = ring_pattern((64, 64), np.random.default_rng(1), 0.1, 4)
    assert rings.shape == (64, 64) and np.abs(rings).max() <= 0.4 + 1e-6
    assert rings.max() > 0.05 or rings.min() < -0.05


def test_kidney_6_is_acquired_at_63_um_on_its_own_grid():
    k5, k6 = render_kidney("kidney_5", 0, "tiny"), render_kidney("kidney_6", 0, "tiny")
    assert k6.voxel_um == pytest.approx(63.08) and k5.voxel_um == pytest.approx(50.0)
    for k in (k5, k6):
        spec = KIDNEYS[k.name]
        assert k.shape == grid_shape(kidney_extent_mm(spec, "tiny"), spec.voxel_um)
        assert k.image.dtype == np.uint16 and k.truth.shape == k.shape


@pytest.mark.parametrize("style", list(STYLES))
def test_every_style_is_deterministic_per_seed(style):
    a = render_kidney("kidney_1_dense", 3, "tiny", style=style)
    b = render_kidney("kidney_1_dense", 3, "tiny", style=style)
    c = render_kidney("kidney_1_dense", 4, "tiny", style=style)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.truth, b.truth)
    assert not np.array_equal(a.image, c.image)


def test_styles_share_anatomy_but_not_appearance():
    a, b, dark = (render_kidney("kidney_5", 0, "tiny", style=s) for s in ("A", "B", "dark"))
    assert np.array_equal(a.truth, b.truth) and np.array_equal(a.truth, dark.truth)  # same organ and vessels
    assert not np.array_equal(a.image, b.image)

    def contrast(k):  # vessel minus surrounding tissue, in units of the tissue's spread
        from scipy import ndimage

        img = k.image.astype(np.float64)
        near = ndimage.binary_dilation(k.truth, iterations=3) & ~k.truth
        return (img[k.truth].mean() - img[near].mean()) / img[near].std()

    assert contrast(a) > contrast(b) > 0  # B's vessels are fainter against its tissue
    assert contrast(dark) < 0  # and the dark style's vessels are darker than tissue


def test_style_is_part_of_the_build(tmp_path):
    out = tmp_path / "ph"
    built = build_phantom(out, seed=0, size="tiny", style="B")
    assert built["style"] == "B" and not built["existed"]
    assert build_phantom(out, seed=0, size="tiny", style="B")["existed"]
    with pytest.raises(UserError, match="style B"):
        build_phantom(out, seed=0, size="tiny", style="A")


def test_unknown_style_is_a_clear_error():
    with pytest.raises(UserError, match="choose one of A, B, dark"):
        style_of("C")
    with pytest.raises(UserError, match="oversample"):
        PhantomStyle("x", "", oversample=0)
