"""Per-sample cost of oblique 2.5-D stacks (random 3-D rotation) against the axis-aligned crop.

``python -m benchmarks.oblique [--shape 600 1303 912] [--samples 40] [--sizes 256 512]`` writes, in a
temporary folder, a memory-mapped uint16 image volume at a real kidney slice shape (kidney_1_dense is
1303 x 912) with a random-ish texture and a uint8 0/255 label volume, wraps both in ``Volume`` and
measures, for the same random crop positions, the median milliseconds per sample (image stack of 3
channels and its label) of:
  * axis-aligned: ``stack_slices(image, z, 3, (y0, x0, size))`` plus the label crop thresholded, the
    current training path (``TrainSlices._cropped``);
  * oblique, uniform: ``oblique_stack`` with a rotation uniform over SO(3) about the crop centre;
  * oblique, 30 deg: the same with ``random_rotation(rng, 30)``;
and prints one row per crop size with the ratios oblique / axis-aligned. The volumes were just
written, so they are in the page cache (as a training set that fits in RAM is after its first epoch).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from src.data.dataset_2d import stack_slices
from src.data.oblique import oblique_stack, random_rotation, window_centre
from src.data.volumes import Volume

CHANNELS = 3


def write_volumes(folder: Path, shape, seed: int = 0) -> tuple[Volume, Volume]:
    """A uint16 image memmap (shifted noise texture plus a few bright tubes) and its 0/255 labels."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    image = np.lib.format.open_memmap(folder / "image.npy", mode="w+", dtype=np.uint16, shape=shape)
    label = np.lib.format.open_memmap(folder / "label.npy", mode="w+", dtype=np.uint8, shape=shape)
    texture = rng.integers(18000, 30000, size=(h, w), dtype=np.uint16)
    tubes = np.zeros((h, w), bool)
    for _ in range(12):
        y, x = rng.integers(0, h - 16), rng.integers(0, w - 300)
        tubes[y : y + 10, x : x + 300] = True
    for i in range(z):
        shifted = np.roll(tubes, (3 * i, 5 * i), axis=(0, 1))
        image[i] = np.where(shifted, 40000, np.roll(texture, (7 * i, 11 * i), axis=(0, 1)))
        label[i] = shifted * np.uint8(255)
    image.flush()
    label.flush()
    del image, label
    data = np.load(folder / "image.npy", mmap_mode="r")
    stats = (float(np.percentile(data[::16, ::8, ::8], 10)), float(np.percentile(data[::16, ::8, ::8], 99.8)))
    return (Volume(folder, data, 0, ".npy", stats, folder / "image.npy"),
            Volume(folder, np.load(folder / "label.npy", mmap_mode="r"), 0, ".npy", None, folder / "label.npy"))


def median_ms(sample, items) -> float:
    sample(*items[0])  # warm-up
    times = []
    for item in items:
        t0 = time.perf_counter()
        sample(*item)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def measure(image: Volume, label: Volume, sizes, samples: int, seed: int = 0) -> dict:
    shape = image.shape
    results = {}
    for size in sizes:
        rng = np.random.default_rng(seed)
        crops = [
            (int(rng.integers(shape[0])), int(rng.integers(shape[1] - size + 1)),
             int(rng.integers(shape[2] - size + 1)))
            for _ in range(samples + 1)
        ]

        def axis_aligned(z, y0, x0, size=size):
            stack = stack_slices(image, z, CHANNELS, (y0, x0, size))
            mask = (np.asarray(label.data[z, y0 : y0 + size, x0 : x0 + size]) > 127).astype(np.uint8)
            return stack, mask

        def oblique(z, y0, x0, rotation, size=size):
            return oblique_stack(image, label, window_centre(z, (y0, x0, size)), rotation, size, CHANNELS)

        row = {"axis": median_ms(axis_aligned, crops)}
        for name, max_angle in (("uniform", 180.0), ("30deg", 30.0)):
            rotations = [random_rotation(rng, max_angle) for _ in crops]
            row[name] = median_ms(oblique, [(*c, r) for c, r in zip(crops, rotations)])
        results[size] = row
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(600, 1303, 912), help="volume (Z, H, W)")
    parser.add_argument("--samples", type=int, default=40, help="samples per measurement (median)")
    parser.add_argument("--sizes", type=int, nargs="+", default=(256, 512))
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bvs-oblique-"))
    try:
        t0 = time.perf_counter()
        image, label = write_volumes(tmp, tuple(args.shape))
        z, h, w = image.shape
        print(f"volume {z} x {h} x {w} uint16 ({image.data.nbytes / 2**30:.2f} GiB) + uint8 labels, memory-mapped, "
              f"written in {time.perf_counter() - t0:.0f} s; {CHANNELS} channels, median of {args.samples} samples, "
              "image stack + label")
        results = measure(image, label, args.sizes, args.samples)
        print(f"{'size':>6}{'axis-aligned ms':>17}{'uniform ms':>12}{'ratio':>8}{'30 deg ms':>11}{'ratio':>8}")
        for size, row in results.items():
            print(f"{size:>6}{row['axis']:>17.1f}{row['uniform']:>12.1f}{row['uniform'] / row['axis']:>7.1f}x"
                  f"{row['30deg']:>11.1f}{row['30deg'] / row['axis']:>7.1f}x")
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
