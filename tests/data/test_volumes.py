import json
import os

import numpy as np
import pytest
import tifffile

from src.data.volumes import (
    VolumeStore,
    list_slices,
    percentiles_from_histogram,
    read_slice,
    slice_shape,
    write_slice,
)
from src.utils.errors import UserError


def write_volume(folder, volume, suffix=".tif", first=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, arr in enumerate(volume):
        write_slice(folder / f"{first + i:04d}{suffix}", arr)
    return folder


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return rng.integers(1000, 40000, size=(12, 17, 23), dtype=np.uint16)


@pytest.mark.parametrize("suffix, dtype", [(".tif", np.uint16), (".jp2", np.uint16), (".png", np.uint16), (".png", np.uint8),
                                           (".tif", np.uint8)])
def test_slice_formats_round_trip_losslessly(tmp_path, suffix, dtype):
    arr = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, size=(13, 21), dtype=dtype)
    path = tmp_path / f"0000{suffix}"
    write_slice(path, arr)
    back = read_slice(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, arr)
    assert slice_shape(path) == (13, 21)


def test_store_memory_maps_in_numeric_order_and_caches(tmp_path, volume):
    folder = write_volume(tmp_path / "kidney" / "images", volume)
    # numeric, not lexicographic, order: add slices 10, 11 named 0010/0011 (already), check order
    store = VolumeStore(progress=False)
    vol = store.open(folder)
    assert isinstance(vol.data, np.memmap)
    assert not vol.data.flags.writeable
    np.testing.assert_array_equal(vol.data, volume)
    assert vol.first == 0 and vol.shape == volume.shape and vol.suffix == ".tif"
    cache = tmp_path / "kidney" / ".cache"
    assert (cache / "images.npy").exists() and (cache / "images.json").exists()
    assert not list(cache.glob("*.tmp-*"))
    # statistics equal numpy's percentiles of the whole volume
    lo, hi = np.percentile(volume, [10, 99.8])
    assert vol.stats == pytest.approx((lo, hi))
    # a second store reuses the cache file without rebuilding
    mtime = (cache / "images.npy").stat().st_mtime_ns
    again = VolumeStore(progress=False).open(folder)
    assert (cache / "images.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.data, volume)


def test_numeric_order_beyond_four_digits(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    for n in (9998, 9999, 10000):
        write_slice(folder / f"{n}.tif", np.full((3, 4), n % 7, np.uint8))
    assert [p.stem for p in list_slices(folder)] == ["9998", "9999", "10000"]


def test_stale_cache_is_rebuilt(tmp_path, volume):
    folder = write_volume(tmp_path / "k" / "images", volume)
    store = VolumeStore(progress=False)
    store.open(folder)
    changed = volume[3] // 2
    tifffile.imwrite(folder / "0003.tif", changed)
    os.utime(folder / "0003.tif", ns=(1, 1))  # a different mtime, whatever the clock resolution
    vol = VolumeStore(progress=False).open(folder)
    np.testing.assert_array_equal(vol.data[3], changed)
    # the same store object notices too
    np.testing.assert_array_equal(store.open(folder).data[3], changed)


def test_interrupted_build_is_never_trusted(tmp_path, volume):
    folder = write_volume(tmp_path / "k" / "images", volume)
    cache = tmp_path / "k" / ".cache"
    cache.mkdir()
    # a half-written array without its metadata (the commit point) is ignored
    np.save(cache / "images.npy", np.zeros((2, 2), np.uint16))
    vol = VolumeStore(progress=False).open(folder)
    np.testing.assert_array_equal(vol.data, volume)
    meta = json.loads((cache / "images.json").read_text())
    assert meta["shape"] == list(volume.shape)


def test_configurable_cache_dir(tmp_path, volume):
    folder = write_volume(tmp_path / "data" / "k" / "images", volume)
    store = VolumeStore(cache_dir=tmp_path / "cache", progress=False)
    store.open(folder)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert not (tmp_path / "data" / "k" / ".cache").exists()


def test_read_only_data_falls_back_to_user_cache(tmp_path, volume, monkeypatch):
    folder = write_volume(tmp_path / "ro" / "k" / "images", volume)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("src.data.volumes._writable", lambda p: False)
    vol = VolumeStore(progress=False).open(folder)
    assert len(list((tmp_path / "xdg" / "bvs" / "volumes").glob("*.npy"))) == 1
    np.testing.assert_array_equal(vol.data, volume)


def test_jp2_and_png_volumes(tmp_path, volume):
    images = write_volume(tmp_path / "ext" / "images", volume[:4], ".jp2")
    labels = write_volume(tmp_path / "ext" / "labels", (volume[:4] % 256).astype(np.uint8), ".png")
    image, label = VolumeStore(progress=False).open_pair(images, labels)
    np.testing.assert_array_equal(image.data, volume[:4])
    assert label.data.dtype == np.uint8 and label.suffix == ".png"


def test_labels_follow_a_sub_range_of_images(tmp_path, volume):
    images = write_volume(tmp_path / "kidney_3_sparse" / "images", volume)
    labels = write_volume(tmp_path / "kidney_3_dense" / "labels", np.zeros((5, 17, 23), np.uint8), first=4)
    store = VolumeStore(progress=False)
    image, label = store.open_pair(images, labels, images_follow_labels=True)
    assert image.first == label.first == 4 and len(image) == 5
    np.testing.assert_array_equal(image.data, volume[4:9])
    assert image.stats == store.open(images).stats  # statistics of the whole kidney
    with pytest.raises(UserError, match="5 label slices"):
        store.open_pair(images, labels)


def test_zero_one_masks_are_read_as_kaggles_zero_255(tmp_path, volume, caplog):
    """Labels saved as 0/1 (a common conversion) mean vessel = 1: the cache holds 0/255 like Kaggle's,
    so every reader's ``> 127`` sees the vessels; 0/255 and empty folders are left as they are, and soft
    pseudo labels (``round(p * 255)``, kind "pseudo") are never rescaled, even where they are all 0 or 1."""
    mask = (volume[:4] > 30000).astype(np.uint8)
    images = write_volume(tmp_path / "k" / "images", volume[:4])
    store = VolumeStore(progress=False)
    with caplog.at_level("WARNING", logger="src.data.volumes"):
        _, label = store.open_pair(images, write_volume(tmp_path / "k" / "labels01", mask, ".png"))
    np.testing.assert_array_equal(label.data, mask * 255)
    assert any("0/1 masks" in r.getMessage() and "labels01" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "k" / ".cache" / "labels01.json").read_text())["scaled"] == 255
    np.testing.assert_array_equal(VolumeStore(progress=False).open(label.folder, "label").data, mask * 255)  # from the cache
    kaggle = store.open(write_volume(tmp_path / "k" / "labels255", mask * 255), "label")
    np.testing.assert_array_equal(kaggle.data, mask * 255)
    empty = store.open(write_volume(tmp_path / "k" / "empty", np.zeros_like(mask)), "label")
    assert empty.data.max() == 0
    soft = store.open(write_volume(tmp_path / "k" / "pseudo", mask), "pseudo")
    np.testing.assert_array_equal(soft.data, mask)
    _, external = store.open_pair(images, soft.folder, label_kind="pseudo")
    np.testing.assert_array_equal(external.data, mask)


def test_a_label_cache_written_before_scaling_is_rebuilt(tmp_path, volume):
    mask = (volume[:3] > 30000).astype(np.uint8)
    folder = write_volume(tmp_path / "k" / "labels", mask)
    VolumeStore(progress=False).open(folder, "label")
    meta_path = tmp_path / "k" / ".cache" / "labels.json"
    meta = json.loads(meta_path.read_text())
    del meta["scaled"]  # what the previous version wrote, with the 0/1 values unscaled
    meta_path.write_text(json.dumps(meta))
    np.save(tmp_path / "k" / ".cache" / "labels.npy", mask)
    np.testing.assert_array_equal(VolumeStore(progress=False).open(folder, "label").data, mask * 255)


def test_normalise_clips_to_unit_range(tmp_path, volume):
    vol = VolumeStore(progress=False).open(write_volume(tmp_path / "k" / "images", volume))
    out = vol.normalise(vol.data)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert (out == 0).any() and (out == 1).any()


@pytest.mark.parametrize("counts", [[0, 5, 0, 3, 1], [7], [0, 0, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
def test_percentiles_from_histogram_match_numpy(counts):
    values = np.repeat(np.arange(len(counts)), counts)
    for q in (0, 10, 50, 99.8, 100):
        assert percentiles_from_histogram(np.array(counts), [q])[0] == pytest.approx(np.percentile(values, q))


# ---------------------------------------------------------------- errors name the file


def test_error_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty slice folder"):
        VolumeStore(progress=False).open(tmp_path / "empty")


def test_error_missing_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        VolumeStore(progress=False).open(tmp_path / "nope")


def test_error_gap_in_numbering(tmp_path, volume):
    folder = write_volume(tmp_path / "k" / "images", volume)
    (folder / "0005.tif").unlink()
    with pytest.raises(UserError, match="slice 0005 is missing"):
        VolumeStore(progress=False).open(folder)


def test_error_shape_mismatch_names_file(tmp_path, volume):
    folder = write_volume(tmp_path / "k" / "images", volume)
    tifffile.imwrite(folder / "0007.tif", np.zeros((5, 5), np.uint16))
    with pytest.raises(UserError, match=r"0007\.tif: slice is 5x5, expected 17x23"):
        VolumeStore(progress=False).open(folder)


def test_error_dtype_mismatch_names_file(tmp_path, volume):
    folder = write_volume(tmp_path / "k" / "images", volume)
    tifffile.imwrite(folder / "0002.tif", np.zeros((17, 23), np.uint8))
    with pytest.raises(UserError, match=r"0002\.tif: slice dtype is uint8, expected uint16"):
        VolumeStore(progress=False).open(folder)


def test_error_unreadable_file(tmp_path, volume):
    folder = write_volume(tmp_path / "k" / "images", volume)
    (folder / "0004.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(UserError, match=r"0004\.tif: unreadable slice"):
        VolumeStore(progress=False).open(folder)


def test_error_label_dtype(tmp_path, volume):
    folder = write_volume(tmp_path / "k" / "labels", volume)
    with pytest.raises(UserError, match="label slices must be uint8"):
        VolumeStore(progress=False).open(folder, "label")


def test_error_image_and_label_counts_differ(tmp_path, volume):
    images = write_volume(tmp_path / "k" / "images", volume)
    labels = write_volume(tmp_path / "k" / "labels", np.zeros((11, 17, 23), np.uint8))
    with pytest.raises(UserError, match="11 label slices .* but 12 image slices"):
        VolumeStore(progress=False).open_pair(images, labels)


def test_error_non_numeric_name(tmp_path, volume):
    folder = write_volume(tmp_path / "k" / "images", volume[:2])
    write_slice(folder / "slice_a.tif", volume[0])
    with pytest.raises(UserError, match="slice_a.tif: slice file name is not a slice number"):
        list_slices(folder)


def test_volumes_pickle_as_cheap_references(tmp_path, volume):
    import pickle

    images = write_volume(tmp_path / "k3s" / "images", volume)
    labels = write_volume(tmp_path / "k3d" / "labels", np.zeros((4, 17, 23), np.uint8), first=5)
    image, _ = VolumeStore(progress=False).open_pair(images, labels, images_follow_labels=True)
    blob = pickle.dumps(image)
    assert len(blob) < 2000  # a reference, not the voxels
    back = pickle.loads(blob)
    assert isinstance(back.data, np.memmap) and back.first == 5 and back.stats == image.stats
    np.testing.assert_array_equal(back.data, volume[5:9])


def test_flush_and_release_only_the_rows_written(tmp_path):
    from src.data.volumes import flush_rows, release_pages

    path = tmp_path / "m.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(10, 33, 17))
    arr[3:6] = 1.5
    flush_rows(arr, 3, 6)
    release_pages(arr, (3, 6))
    np.testing.assert_array_equal(np.load(path)[3:6], 1.5)  # on disk, and still readable through the map
    np.testing.assert_array_equal(np.asarray(arr[3:6]), 1.5)
    assert not np.asarray(arr[:3]).any() and not np.asarray(arr[6:]).any()
    flush_rows(np.zeros((4, 4)), 0, 2)  # an ordinary array: nothing to do
    release_pages(np.zeros((4, 4)), (0, 2))
