"""``data.rotate3d_prob``: oblique training stacks (the volume rotated in 3-D before slicing)."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from src.data.dataset_2d import SliceSource, TrainSlices
from src.data.registry import Registry
from src.data.transforms import build_augmentation
from src.data.volumes import Volume


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.random((24, 48, 40)), 3)
    image = ((field - field.min()) / np.ptp(field) * 50000 + 1000).astype(np.uint16)
    label = (image > np.median(image)).astype(np.uint8) * 255  # the label is a function of the image
    group = Registry.load()["kidney_1_dense"]
    stats = (float(image.min()), float(image.max()))
    return SliceSource(group, Volume(Path("img"), image, 0, ".tif", stats), Volume(Path("lab"), label, 0, ".tif"), 127), image


def dataset(src, **kw):
    data = TrainSlices([src], 3, build_augmentation("d4", 24), seed=1, **kw)
    data.reseed(1)  # the augmentation's own RNG too
    return data


def test_oblique_image_and_label_rotate_together(source):
    src, image = source
    data = dataset(src, rotate3d_prob=1.0)
    centre_level = (np.median(image) - src.image.stats[0]) / (src.image.stats[1] - src.image.stats[0])
    agree, inside = [], []
    for i in range(30):
        item = data[i]
        centre = item["image"][1].numpy()
        nonzero = centre > 0  # inside the volume
        if nonzero.sum() < 50:
            continue
        agree.append(((centre > centre_level) == (item["mask"][0].numpy() > 0))[nonzero].mean())
        inside.append(nonzero.mean())
    assert len(agree) > 10 and np.mean(agree) > 0.95
    assert min(inside) < 1.0  # some stacks really leave the axis-aligned box


def test_rotation_is_deterministic_and_off_by_default(source):
    src, _ = source
    a, b = dataset(src, rotate3d_prob=0.5), dataset(src, rotate3d_prob=0.5)
    for i in range(6):
        np.testing.assert_array_equal(a[i]["image"].numpy(), b[i]["image"].numpy())
    plain, off = dataset(src), dataset(src, rotate3d_prob=0.0)
    for i in range(6):
        np.testing.assert_array_equal(plain[i]["image"].numpy(), off[i]["image"].numpy())


def test_zero_angle_gives_axis_aligned_stacks(source):
    src, _ = source
    data = dataset(src, rotate3d_prob=1.0, rotate3d_max_angle=0.0)
    data.augmentation = build_augmentation("d4", 24)
    # no pipeline randomness: compare the cropped stack itself
    import src.data.dataset_2d as ds

    for z in (0, 5, 23):
        image, mask = data._cropped(src, z)
        full = ds.stack_slices(src.image, z, 3)
        full_mask = src.mask(z)
        hits = [(y, x) for y in range(full.shape[0] - 23) for x in range(full.shape[1] - 23)
                if np.allclose(full[y : y + 24, x : x + 24], image, atol=1e-5)]
        assert hits, z
        y, x = hits[0]
        np.testing.assert_array_equal(full_mask[y : y + 24, x : x + 24], mask)


def test_datamodule_rejects_a_bad_probability(tmp_path):
    from src.data.datamodule_2d import MultiviewDataModule
    from src.utils.errors import UserError

    with pytest.raises(UserError, match="rotate3d_prob"):
        MultiviewDataModule(data_dir=str(tmp_path), rotate3d_prob=1.5)
