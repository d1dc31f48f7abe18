import logging
import os
import shutil

import numpy as np
import pytest
import torch

from src.data.datamodule_2d import per_device_batch_size
from src.data.dataset_2d import ValidationSlices, stack_slices
from src.data.volumes import VolumeStore, read_slice, write_slice
from src.utils.errors import UserError
from tests.data.datamodules import tiny_2d_datamodule


def test_training_samples_are_normalised_stacks_with_binary_masks(tiny_phantom):
    dm = tiny_2d_datamodule(tiny_phantom)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 32, 32)
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    # fold 0 before pseudo labels: kidney_1_dense and kidney_2 (projections not generated in this fixture)
    assert [s.group.name for s in dm.train_set.sources] == ["kidney_1_dense", "kidney_2"]
    assert len(dm.train_set) == 2 * sum(len(s) for s in dm.train_set.sources)  # train_mutliplier 2


def test_zero_one_labels_train_like_zero_255_labels(tiny_phantom, tmp_path):
    """A copy of the dataset whose train labels were converted to 0/1 gives the same training masks."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_phantom, copy, ignore=shutil.ignore_patterns(".cache"))
    for group in ("kidney_1_dense", "kidney_2"):
        for path in sorted((copy / "train" / group / "labels").iterdir()):
            write_slice(path, (read_slice(path) > 127).astype(np.uint8))
    original, converted = tiny_2d_datamodule(tiny_phantom), tiny_2d_datamodule(copy)
    original.setup("fit")
    converted.setup("fit")
    for a, b in zip(original.train_set.sources, converted.train_set.sources, strict=True):
        assert a.group.name == b.group.name
        masks = [a.mask(i) for i in range(len(a))]
        assert sum(int(m.sum()) for m in masks) > 0
        for i, m in enumerate(masks):
            np.testing.assert_array_equal(m, b.mask(i))


def test_missing_projections_are_a_warning_that_names_the_command(tiny_phantom, caplog):
    """Training without the _xz/_zy projections of a volume that is there works, but the user is told:
    a model that never saw the side views is then asked to predict them."""
    dm = tiny_2d_datamodule(tiny_phantom)
    with caplog.at_level(logging.INFO, logger="src.data.datamodule_2d"):
        dm.setup("fit")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("kidney_1_dense has no xz projection" in m and "generate_mutliview.py" in m for m in warned)
    assert any("kidney_2 has no zy projection" in m for m in warned)
    assert not any("hoa" in m.lower() for m in warned)  # an absent volume is no reason to warn


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_stack_holds_neighbours_and_zeros_beyond_the_ends(tiny_phantom, channels):
    volume = VolumeStore(progress=False).open(tiny_phantom / "train" / "kidney_1_dense" / "images")
    r = channels // 2
    for z in (0, 1, len(volume) // 2, len(volume) - 1):
        stack = stack_slices(volume, z, channels)
        assert stack.shape == (*volume.shape[1:], channels)
        for k in range(channels):
            zz = z - r + k
            expected = volume.normalise(volume.data[zz]) if 0 <= zz < len(volume) else 0
            np.testing.assert_array_equal(stack[..., k], expected)
        assert stack.min() >= 0 and stack.max() <= 1


def test_samples_never_list_folders(tiny_phantom, monkeypatch):
    dm = tiny_2d_datamodule(tiny_phantom)
    dm.setup("fit")

    def forbidden(*a, **k):
        raise AssertionError("directory listing while sampling")

    monkeypatch.setattr(os, "listdir", forbidden)
    monkeypatch.setattr(os, "scandir", forbidden)
    for i in range(0, len(dm.train_set), 37):
        dm.train_set[i]
    dm.val_set[0]


def test_validation_yields_whole_slices_in_order(tiny_phantom):
    dm = tiny_2d_datamodule(tiny_phantom)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    slices = [int(b["slice"]) for b in batches]
    assert slices == list(range(len(slices)))
    assert batches[0]["image"].shape[-2:] == dm.val_set.source.image.shape[1:]
    assert bool(batches[-1]["last"]) and not any(bool(b["context"]) for b in batches)


def test_distributed_shards_are_contiguous_with_one_context_slice(tiny_phantom):
    dm = tiny_2d_datamodule(tiny_phantom)
    dm.setup("fit")
    source = dm.val_set.source
    n = len(source)
    first = ValidationSlices(source, 3, 0, n // 2, context=True)
    second = ValidationSlices(source, 3, n // 2, n, context=True)
    assert first.slices == list(range(0, n // 2)) and first.context_slice is None
    assert second.slices == list(range(n // 2 - 1, n)) and second.context_slice == n // 2 - 1
    assert second[0]["context"] and not second[1]["context"] and second[len(second) - 1]["last"]


def test_absent_groups_are_skipped_with_a_log_line(tiny_phantom, caplog):
    caplog.set_level(logging.INFO)
    dm = tiny_2d_datamodule(tiny_phantom, external=True)  # stage 2 before pseudo-labelling
    dm.setup("fit")
    assert "hoa_ladaf_2020_31" not in [s.group.name for s in dm.train_set.sources]
    assert "50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_/labels not found" in caplog.text


def test_no_training_data_is_a_clear_error(tmp_path, tiny_phantom):
    data = tmp_path / "raw"
    shutil.copytree(tiny_phantom / "train" / "kidney_3_sparse", data / "train" / "kidney_3_sparse")
    shutil.copytree(tiny_phantom / "train" / "kidney_3_dense", data / "train" / "kidney_3_dense")
    with pytest.raises(UserError, match="fold 0 has no training data"):
        tiny_2d_datamodule(data).setup("fit")


def test_bad_settings_are_clear_errors(tmp_path, tiny_phantom):
    with pytest.raises(UserError, match="must be odd"):
        tiny_2d_datamodule(tiny_phantom, in_channels=4)
    with pytest.raises(UserError, match="fold 5 is not defined for 2d"):
        tiny_2d_datamodule(tiny_phantom, fold=5)
    with pytest.raises(UserError, match="is not a folder"):
        tiny_2d_datamodule(tmp_path / "nowhere").setup("fit")
    with pytest.raises(UserError, match="does not divide over 3 devices"):
        per_device_batch_size(32, 3)
    assert per_device_batch_size(32, 2) == 16


def test_crop_window_contains_vessels_and_stays_inside():
    from src.data.dataset_2d import crop_window

    rng = np.random.default_rng(0)
    mask = np.zeros((300, 200), np.uint8)
    mask[[5, 150, 290], [190, 3, 100]] = 1
    hits = set()
    for _ in range(300):
        y0, x0 = crop_window(mask, 64, "vessel", rng)
        assert 0 <= y0 <= 300 - 64 and 0 <= x0 <= 200 - 64
        inside = mask[y0 : y0 + 64, x0 : x0 + 64]
        assert inside.any()
        hits.add(tuple(np.argwhere(inside)[0] + (y0, x0)))
    assert len(hits) == 3  # every vessel pixel gets picked
    y0, x0 = crop_window(np.zeros((80, 70), np.uint8), 64, "vessel", rng)
    assert 0 <= y0 <= 16 and 0 <= x0 <= 6


def test_windowed_stack_equals_the_crop_of_the_full_stack(tiny_phantom):
    volume = VolumeStore(progress=False).open(tiny_phantom / "train" / "kidney_2" / "images")
    full = stack_slices(volume, 0, 5)
    np.testing.assert_array_equal(stack_slices(volume, 0, 5, (3, 7, 20)), full[3:23, 7:27])


def test_large_and_small_slices_both_give_crops(tiny_phantom):
    dm = tiny_2d_datamodule(tiny_phantom, img_size=40)  # tiny slices are about 28-70 pixels: some pad, some crop first
    dm.setup("fit")
    shapes = {tuple(dm.train_set[i]["image"].shape) for i in range(0, len(dm.train_set), 11)}
    assert shapes == {(3, 40, 40)}


def test_external_kidney_joins_stage_2_once_pseudo_labels_exist_and_never_stage_1(tmp_path, tiny_phantom):
    import cv2

    data = tmp_path / "raw"
    shutil.copytree(tiny_phantom / "train", data / "train")
    hoa = "train_ext/50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_"
    shutil.copytree(tiny_phantom / hoa / "images", data / hoa / "images")
    (data / hoa / "labels").mkdir()
    for p in (data / hoa / "images").glob("*.jp2"):
        cv2.imwrite(str(data / hoa / "labels" / f"{p.stem}.png"), np.full((59, 51), 200, np.uint8))
    dm = tiny_2d_datamodule(data, external=True)
    dm.setup("fit")
    hoa_source = [s for s in dm.train_set.sources if s.group.name == "hoa_ladaf_2020_31"]
    assert hoa_source and hoa_source[0].mask(0).all()  # round(p * 255) = 200 > 127: vessel
    stage_1 = tiny_2d_datamodule(data)  # data.external=false: what make demo's stage 1 trains on, whatever is on disk
    stage_1.setup("fit")
    assert {s.group.split for s in stage_1.train_set.sources} == {"train"}
    assert len(stage_1.train_set) < len(dm.train_set)


def test_img_size_takes_an_int_or_a_square_pair_and_says_what_is_wrong_otherwise(tiny_phantom):
    assert tiny_2d_datamodule(tiny_phantom, img_size=[24, 24]).augmentation.size == 24
    with pytest.raises(UserError, match="data.img_size: the 2-D crops are square"):
        tiny_2d_datamodule(tiny_phantom, img_size=[24, 32])
    with pytest.raises(UserError, match="data.img_size must be an int or a list of 2 ints"):
        tiny_2d_datamodule(tiny_phantom, img_size=[24, 24, 24])
    with pytest.raises(UserError, match="data.pseudo_merge: unknown 'both'; choose one of union, replace"):
        tiny_2d_datamodule(tiny_phantom, pseudo_merge="both")
