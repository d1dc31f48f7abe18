"""Stage-2 sampling: organ weights from the registry, CutMix within a group."""

import numpy as np
import pytest

from src.data.dataset_2d import SliceSource, TrainSlices, organ_weights, stack_slices
from src.data.registry import Registry
from tests.data.datamodules import tiny_2d_datamodule


def fake_sources(names):
    registry = Registry.load()
    return [SliceSource(registry[n], image=None, label=None) for n in names]


def test_weights_come_from_the_registry_and_projections_share_them():
    sources = fake_sources(["kidney_1_dense", "kidney_1_dense_xz", "kidney_2", "kidney_2_zy", "hoa_ladaf_2020_31"])
    w = organ_weights(sources)
    raw = np.array([1.0, 1.0, 0.65, 0.65, 0.65])
    np.testing.assert_allclose(w, raw / raw.sum())


def test_absent_groups_drop_out_and_the_rest_renormalise(tiny_phantom):
    dm = tiny_2d_datamodule(tiny_phantom, sampling="organ_weighted")  # fold 0 without HOA and without projections here
    dm.setup("fit")
    names = [s.group.name for s in dm.train_set.sources]
    assert names == ["kidney_1_dense", "kidney_2"]
    np.testing.assert_allclose(dm.train_set.weights, [1 / 1.65, 0.65 / 1.65])


def test_sampling_frequencies_match_the_weights(tiny_phantom):
    dm = tiny_2d_datamodule(tiny_phantom, sampling="organ_weighted")
    dm.setup("fit")
    ds = dm.train_set
    ds.reseed(0)
    draws = np.array([ds._draw(i)[0] for i in range(6000)])
    freq = np.bincount(draws, minlength=2) / len(draws)
    assert np.abs(freq - ds.weights).max() < 0.02  # 3 standard deviations is about 0.019
    sample = ds[0]
    assert sample["image"].shape == (3, 32, 32) and sample["source"] in (0, 1)


def test_cutmix_pastes_a_patch_of_another_slice_of_the_same_group(tiny_phantom):
    dm = tiny_2d_datamodule(tiny_phantom)
    dm.setup("fit")
    source = dm.train_set.sources[1]
    ds = TrainSlices([source], 3, augmentation=None, cutmix_p=1.0, seed=3)
    mixed_any = False
    for item in range(0, len(source), 3):
        out = ds[item]
        z, partner = out["slice"], out["cutmix_partner"]
        assert 0 <= partner < len(source)
        own, other = stack_slices(source.image, z, 3), stack_slices(source.image, partner, 3)
        image = out["image"].numpy().transpose(1, 2, 0)
        changed = np.argwhere((image != own).any(-1))
        if len(changed):
            mixed_any = True
            (y0, x0), (y1, x1) = changed.min(0), changed.max(0) + 1
            np.testing.assert_array_equal(image[y0:y1, x0:x1], other[y0:y1, x0:x1])
            np.testing.assert_array_equal(out["mask"][0].numpy()[y0:y1, x0:x1], source.mask(partner)[y0:y1, x0:x1])
    assert mixed_any


def test_cutmix_probability(tiny_phantom):
    dm = tiny_2d_datamodule(tiny_phantom, cutmix_p=0.5)
    dm.setup("fit")
    partners = [dm.train_set[i]["cutmix_partner"] for i in range(400)]
    assert 0.4 < np.mean([p >= 0 for p in partners]) < 0.6


def test_bad_sampling_settings(tiny_phantom):
    from src.utils.errors import UserError

    with pytest.raises(UserError, match="data.sampling"):
        tiny_2d_datamodule(tiny_phantom, sampling="random")
    with pytest.raises(UserError, match="data.cutmix_p"):
        tiny_2d_datamodule(tiny_phantom, cutmix_p=1.5)
