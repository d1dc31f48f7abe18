import albumentations as A
import numpy as np
import pytest

from src.data.transforms import SCHEMES, CentreKeepingChannelDropout, build_transforms
from src.utils.errors import UserError


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_schemes_keep_shapes_and_binary_masks(scheme, channels, recwarn):
    rng = np.random.default_rng(0)
    transform = build_transforms(scheme, 64)
    transform.set_random_seed(0)
    for shape in [(90, 77), (40, 50)]:  # larger and smaller than the crop
        image = rng.random((*shape, channels)).astype(np.float32)
        mask = (rng.random(shape) > 0.9).astype(np.uint8)
        for _ in range(5):
            out = transform(image=image, mask=mask)
            assert out["image"].shape == (64, 64, channels) and out["image"].dtype == np.float32
            assert out["mask"].shape == (64, 64)
            assert set(np.unique(out["mask"])) <= {0, 1}
    # albumentations 2 ignores unknown (1.x) argument names with only a warning: there must be none
    assert not [w for w in recwarn if "albumentations" in str(w.filename) or "argument" in str(w.message).lower()]


def test_crop_contains_vessels_when_the_slice_has_any():
    image = np.zeros((300, 300, 3), np.float32)
    mask = np.zeros((300, 300), np.uint8)
    mask[250:260, 20:30] = 1
    transform = build_transforms("d4", 64)
    for seed in range(10):
        transform.set_random_seed(seed)
        assert transform(image=image, mask=mask)["mask"].any()


def test_channel_dropout_never_drops_the_centre():
    transform = A.Compose([CentreKeepingChannelDropout(channel_drop_range=(1, 2), p=1.0)], seed=1)
    image = np.ones((4, 4, 5), np.float32)
    dropped = np.zeros(5)
    for _ in range(200):
        out = transform(image=image)["image"]
        assert (out[..., 2] == 1).all()
        dropped += (out == 0).all(axis=(0, 1))
    assert dropped[2] == 0 and (dropped[[0, 1, 3, 4]] > 0).all()
    single = transform(image=np.ones((4, 4, 1), np.float32))["image"]
    assert (single == 1).all()


def test_hard_scheme_is_the_recipe():
    names = [type(t).__name__ for t in build_transforms("hard", 512).transforms]
    assert names == ["PadIfNeeded", "CropNonEmptyMaskIfExists", "Affine", "HorizontalFlip", "VerticalFlip", "RandomRotate90", "OneOf"]
    affine = build_transforms("hard", 512).transforms[2]
    assert affine.keep_ratio and affine.border_mode == 4  # cv2.BORDER_REFLECT_101
    one_of = build_transforms("hard", 512).transforms[-1]
    kinds = [(type(t).__name__, getattr(t, "contrast_limit", None)) for t in one_of.transforms]
    assert kinds == [("RandomBrightnessContrast", (-0.2, 0.2)), ("RandomBrightnessContrast", (0.0, 0.0)), ("RandomGamma", None)]


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(UserError, match="data.aug: unknown 'nope'"):
        build_transforms("nope", 64)


def test_scale_augmentation_is_centred_where_asked():
    import numpy as np

    from src.data.transforms import build_augmentation, scale_augmentation
    from src.utils.errors import UserError

    aug = build_augmentation("d4", 64, scale_center=0.8, scale_limit=0.05)
    names = [type(t).__name__ for t in aug.pipeline.transforms]
    assert names[0] == "Affine" and aug.pipeline.transforms[0].p == 1.0
    assert [type(t).__name__ for t in aug.full.transforms][:3] == ["PadIfNeeded", "CropNonEmptyMaskIfExists", "Affine"]
    assert [type(t).__name__ for t in build_augmentation("d4", 64).pipeline.transforms][0] != "Affine"
    # a centred square of side 32 shrinks to about 0.8 * 32 (d4 keeps the area)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 1
    image = np.zeros((64, 64, 3), np.float32)
    aug.set_random_seed(0)
    areas = [aug.pipeline(image=image, mask=mask)["mask"].sum() / mask.sum() for _ in range(20)]
    assert 0.7**2 <= min(areas) and max(areas) <= 0.9**2 and abs(np.mean(areas) - 0.8**2) < 0.05  # nearest-neighbour mask: whole pixels
    kernel = build_augmentation("kernel", 64, scale_center=0.8)
    assert type(kernel.full.transforms[0]).__name__ == "Affine"
    for bad in (dict(centre=0.1, limit=0.2), dict(centre=0.8, p=2.0)):
        try:
            scale_augmentation(**bad)
        except UserError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_acquisition_scheme_changes_intensities_but_never_resamples_the_crop():
    from src.data.transforms import build_augmentation

    rng = np.random.default_rng(3)
    mask = (rng.random((32, 32)) > 0.8).astype(np.uint8)
    image = np.repeat((mask * 0.5 + 0.25).astype(np.float32)[..., None], 3, axis=2)
    dihedral = [np.rot90(m, k) for m in (mask, mask[::-1]) for k in range(4)]
    plain = [np.rot90(m, k) for m in (image[..., 0], image[::-1, :, 0]) for k in range(4)]
    augmentation = build_augmentation("acquisition", 32)
    changed = 0
    for seed in range(20):
        augmentation.set_random_seed(seed)
        out = augmentation.pipeline(image=image, mask=mask)
        assert any(np.array_equal(out["mask"], d) for d in dihedral)  # a flip or quarter turn, no zoom or rotation
        changed += not any(np.allclose(out["image"][..., 0], p, atol=1e-3) for p in plain)
    assert changed >= 10  # the intensity shifts act
