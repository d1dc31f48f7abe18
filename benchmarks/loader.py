"""Training-sample throughput: the 2.5-D dataset over the memory-mapped store against a naive reader.

``python -m benchmarks.loader [--slices 200] [--samples 300]`` writes a temporary dataset in the Kaggle
layout with the real slice shapes (kidney_1_dense 1303x912, kidney_2 1041x1511, kidney_3 1706x1510;
``--phantom small|medium`` uses a phantom instead, whose slices are smaller than the crop), then
draws fold-0 training samples (crop 512, 3 channels, ``hard`` augmentation) through a DataLoader with
one worker, one sample at a time, from:
  * the project's ``TrainSlices`` (neighbouring slices from one read of the memory map);
  * a naive reader that does what the original did for every sample: list the slice folder, sort it,
    find the slice, read the neighbouring slice files and the label file, normalise, augment;
and prints samples per second of both and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.datamodule_2d import MultiviewDataModule
from src.data.phantom import build_phantom
from src.data.transforms import Augmentation
from src.utils.settings import REPO_ROOT


class NaiveSlices(Dataset):
    """The original's per-sample file access, kept only as a yardstick."""

    def __init__(self, sources, in_channels: int, transform):
        self.items = []  # (image path, label path, stats)
        for s in sources:
            for z in range(len(s)):
                self.items.append((s.image.slice_path(s.image.first + z), s.label.slice_path(s.label.first + z), s.image.stats))
        self.r = in_channels // 2
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def _read(self, path: str, stats) -> np.ndarray:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED).astype(np.float32)
        return np.clip((img - stats[0]) / (stats[1] - stats[0]), 0, 1)

    def __getitem__(self, i):
        image_path, label_path, stats = self.items[i]
        folder = os.path.dirname(image_path)
        files = sorted((f for f in os.listdir(folder) if f.endswith(Path(image_path).suffix)), key=lambda f: int(Path(f).stem))
        index = files.index(os.path.basename(image_path))
        centre = self._read(image_path, stats)
        planes = []
        for k in range(index - self.r, index + self.r + 1):
            planes.append(self._read(os.path.join(folder, files[k]), stats) if 0 <= k < len(files) else np.zeros_like(centre))
        image = np.stack(planes, -1)
        mask = (cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED) > 127).astype(np.uint8)
        out = self.transform(image=image, mask=mask)
        return {"image": torch.from_numpy(out["image"].transpose(2, 0, 1).copy()),
                "mask": torch.from_numpy(out["mask"][None].astype(np.float32))}


REAL_SHAPES = {"kidney_1_dense": (1303, 912), "kidney_2": (1041, 1511), "kidney_3_sparse": (1706, 1510)}


def write_real_sized(root: Path, slices: int, seed: int = 0) -> None:
    """Noise images with a few straight vessels, at the competition's slice shapes (content is irrelevant here)."""
    import tifffile

    rng = np.random.default_rng(seed)
    for name, (h, w) in REAL_SHAPES.items():
        n = slices if name != "kidney_3_sparse" else 8
        folder = root / "train" / name
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir(parents=True)
        base = rng.integers(18000, 30000, size=(h, w), dtype=np.uint16)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(6):
            y, x = rng.integers(0, h - 40), rng.integers(0, w - 400)
            mask[y : y + 12, x : x + 400] = 255
        for i in range(n):
            tifffile.imwrite(folder / "images" / f"{i:04d}.tif", np.roll(base, i, axis=1))
            tifffile.imwrite(folder / "labels" / f"{i:04d}.tif", np.roll(mask, i, axis=1))
    dense = root / "train" / "kidney_3_dense" / "labels"
    dense.mkdir(parents=True)
    for i in range(2, 6):
        shutil.copy(root / "train" / "kidney_3_sparse" / "labels" / f"{i:04d}.tif", dense / f"{i:04d}.tif")


BATCH = 1  # samples one at a time: the per-sample cost of each reader


def throughput(dataset, samples: int, seed: int = 0) -> float:
    """Samples per second through a DataLoader with one worker, batches of ``BATCH``, after the first batch."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[: samples + BATCH].tolist()
    loader = DataLoader(torch.utils.data.Subset(dataset, order), batch_size=BATCH, num_workers=1)
    it = iter(loader)
    next(it)  # start the worker
    t0 = time.perf_counter()
    n = 0
    for batch in it:
        n += len(batch["image"])
    return n / (time.perf_counter() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantom", default=None, choices=("tiny", "small", "medium"), help="use a phantom instead")
    parser.add_argument("--data", default=None, help="phantom folder (default data/phantom-<size>)")
    parser.add_argument("--slices", type=int, default=200, help="slices per real-sized training volume")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args(argv)
    tmp = None
    if args.phantom:
        data = Path(args.data or REPO_ROOT / "data" / f"phantom-{args.phantom}")
        build_phantom(data, seed=0, size=args.phantom)
        what = f"phantom {args.phantom}"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bvs-loader-"))
        data = tmp / "raw"
        write_real_sized(data, args.slices)
        what = "real slice shapes"
    try:
        return measure(data, what, args.samples)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def measure(data: Path, what: str, samples: int) -> float:
    torch.set_num_threads(1)
    dm = MultiviewDataModule(str(data), fold=0, in_channels=3, img_size=512, batch_size=1, num_workers=1, aug="hard", progress=False)
    dm.setup("fit")
    ours = dm.train_set
    shape = ours.sources[0].image.shape
    print(f"{what}: {len(ours)} training samples (e.g. {shape[1]}x{shape[2]}, {shape[0]} per folder), crop 512, 3 channels, "
          f"batch {BATCH}, 1 worker")
    aug = dm.augmentation
    crop_only = Augmentation(aug.scheme, aug.size, aug.crop, A.Compose([]), A.Compose(aug.full.transforms[:2]))
    print(f"{'pipeline':<30}{'naive samples/s':>16}{'store samples/s':>16}{'speed-up':>10}")
    ratios = {}
    for name, augmentation in (("hard augmentation", aug), ("read + crop only", crop_only)):
        ours.augmentation = augmentation
        rate_ours = throughput(ours, samples)
        rate_naive = throughput(NaiveSlices(ours.sources, 3, augmentation.full), samples)
        ratios[name] = rate_ours / rate_naive
        print(f"{name:<30}{rate_naive:>16.1f}{rate_ours:>16.1f}{ratios[name]:>9.1f}x")
    return ratios


if __name__ == "__main__":
    main()
