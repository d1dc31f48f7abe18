import numpy as np
import pytest
import torch

from src.data.datamodule_3d import VolumeDataModule3D, VolumePair, choose_crop, d4_3d
from src.data.registry import Registry
from src.data.volumes import VolumeStore
from src.utils.errors import UserError


@pytest.fixture(scope="module")
def pair(tiny_phantom):
    registry = Registry.load()
    return VolumePair.open(VolumeStore(progress=False), registry["kidney_2"], tiny_phantom, registry.label_threshold)


def make(data_dir, **kw):
    args = dict(data_dir=str(data_dir), fold=0, img_size=16, batch_size=2, samples_per_epoch=8, val_samples_per_epoch=4,
                num_workers=0, progress=False)
    args.update(kw)
    return VolumeDataModule3D(**args)


def hit_rate(pair, size, vessel_p, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return np.mean([pair.read(choose_crop(pair, size, vessel_p, rng), size)[1].any() for _ in range(n)])


def test_crops_hit_vessels_at_the_asked_rate(pair):
    base = hit_rate(pair, 8, 0.0)
    assert base < 0.9  # small crops often miss the vessels
    assert hit_rate(pair, 8, 1.0) == 1.0
    half = hit_rate(pair, 8, 0.5)
    expected = 0.5 + 0.5 * base
    assert abs(half - expected) < 0.1


def test_volumes_smaller_than_the_crop_are_padded(pair):
    size = max(pair.shape) + 10
    image, label = pair.read(choose_crop(pair, size, 1.0, np.random.default_rng(0)), size)
    assert image.shape == label.shape == (size, size, size)
    assert label.sum() == (np.asarray(pair.label.data) > pair.threshold).sum()  # the whole volume is inside, labels unpadded


def test_crop_reads_the_right_voxels(pair):
    origin = (2, 5, 7)
    image, label = pair.read(origin, 8)
    np.testing.assert_array_equal(image, pair.image.normalise(pair.image.data[2:10, 5:13, 7:15]))
    np.testing.assert_array_equal(label, np.asarray(pair.label.data[2:10, 5:13, 7:15]) > 127)


def test_d4_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 8)).astype(np.float32)
    label = (image > 0.7).astype(np.uint8)
    for _ in range(20):
        a, b = d4_3d(image, label, rng)
        assert a.shape == (8, 8, 8) and a.flags.c_contiguous
        np.testing.assert_array_equal(b, (a > 0.7).astype(np.uint8))


def test_datamodule_batches_and_fixed_validation(tiny_phantom):
    dm = make(tiny_phantom)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["mask"].shape == (2, 1, 16, 16, 16)
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    assert len(dm.train_set) == 8 and len(dm.val_set) == 4
    assert [p.group.name for p in dm.train_set.pairs] == ["kidney_1_dense", "kidney_2"]  # HOA absent: skipped
    again = make(tiny_phantom)
    again.setup("fit")
    assert again.val_set.origins == dm.val_set.origins  # the same validation crops every time
    torch.testing.assert_close(again.val_set[1]["image"], dm.val_set[1]["image"])


def test_3d_errors(tmp_path, tiny_phantom):
    with pytest.raises(UserError, match="fold 9 is not defined for 3d"):
        make(tiny_phantom, fold=9)
    with pytest.raises(UserError, match="is not a folder"):
        make(tmp_path / "none").setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="3-D fold 0 has no training data"):
        make(tmp_path / "empty").setup("fit")


def test_crop_size_takes_an_int_or_three_and_names_the_option():
    from src.data.datamodule_3d import crop_size
    from src.utils.errors import UserError

    assert crop_size(64) == (64, 64, 64)
    assert crop_size([32, 64, 64]) == (32, 64, 64)
    with pytest.raises(UserError, match="data.img_size must be an int or a list of 3 ints"):
        crop_size([64, 64])
    with pytest.raises(UserError, match="positive"):
        crop_size(0)


def test_non_cubic_crops_keep_their_shape_through_d4():
    from src.data.datamodule_3d import d4_3d

    rng = np.random.default_rng(0)
    image = np.zeros((8, 16, 16), np.float32)
    for _ in range(30):
        out, lab = d4_3d(image, image.astype(np.uint8), rng)
        assert out.shape == (8, 16, 16) and lab.shape == (8, 16, 16)


def test_a_list_img_size_gives_crops_of_that_shape(tiny_phantom):
    dm = make(tiny_phantom, img_size=[8, 16, 24])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (2, 1, 8, 16, 24) and tuple(batch["mask"].shape) == (2, 1, 8, 16, 24)
    assert tuple(next(iter(dm.val_dataloader()))["image"].shape[2:]) == (8, 16, 24)


def test_aug_robust_changes_training_crops_not_labels_or_validation(tiny_phantom):
    plain, robust = make(tiny_phantom), make(tiny_phantom, aug="robust")
    for dm in (plain, robust):
        dm.setup("fit")
        dm.train_set.reseed(3)
    a, b = plain.train_set[0], robust.train_set[0]
    np.testing.assert_array_equal(a["mask"].numpy(), b["mask"].numpy())  # the same crop and turn: d4 draws first
    assert not np.allclose(a["image"].numpy(), b["image"].numpy())
    np.testing.assert_array_equal(plain.val_set[0]["image"].numpy(), robust.val_set[0]["image"].numpy())
