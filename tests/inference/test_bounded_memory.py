"""The robustness levers' volume passes allocate per chunk: their peak allocation (numpy arrays, traced)
does not grow with the depth of the memory-mapped volume."""

import tracemalloc

import numpy as np
from scipy import ndimage

from src.inference.postprocess import postprocess_volume
from src.inference.resample import resample_to_file, resampled_shape


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def image(tmp_path, depth):
    path = tmp_path / f"image{depth}.npy"
    src = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(depth, 128, 128))
    src[:] = np.random.default_rng(0).integers(0, 60000, src.shape, dtype=np.uint16)
    src.flush()
    return np.load(path, mmap_mode="r")


def score(tmp_path, depth):
    path = tmp_path / f"score{depth}.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(depth, 128, 128))
    for z0 in range(0, depth, 32):  # blobs like vessels, a few components per slab
        field = ndimage.gaussian_filter(np.random.default_rng(z0).random((32, 128, 128), dtype=np.float32), 2)
        out[z0:z0 + 32] = (field - field.min()) / np.ptp(field)
    out.flush()
    return np.load(path, mmap_mode="r")


def test_rescaling_allocates_the_same_for_a_volume_four_times_deeper(tmp_path):
    peaks = []
    for depth in (32, 128):
        src = image(tmp_path, depth)
        shape = resampled_shape(src.shape, 63.08 / 50)
        out = tmp_path / f"out{depth}.npy"
        peaks.append(peak_bytes(lambda src=src, shape=shape, out=out: resample_to_file(src, shape, out, chunk=4)))
    whole = int(np.prod(resampled_shape((128, 128, 128), 63.08 / 50))) * 4  # the deep output as float32
    assert peaks[1] < 1.3 * peaks[0] and peaks[1] < whole / 10, (peaks, whole)


def test_thresholds_and_component_removal_allocate_the_same_for_a_volume_four_times_deeper(tmp_path):
    for mode in ("fixed", "top_fraction"):
        peaks = []
        for depth in (32, 128):
            s = score(tmp_path, depth)
            mask = np.lib.format.open_memmap(tmp_path / f"mask{depth}.npy", mode="w+", dtype=np.uint8, shape=s.shape)
            peaks.append(peak_bytes(lambda s=s, mode=mode, mask=mask: postprocess_volume(s, mode, 0.9, 0.05, 5, out=mask, chunk=4)))
            assert 0 < mask.mean() < 0.2
        assert peaks[1] < 1.3 * peaks[0], (mode, peaks)
