"""Memory and speed of the 3-D data side: memory-mapped crops against whole volumes in RAM.

``python -m benchmarks.volumes [--shape 400 1024 1280] [--crops 200] [--size 192]`` writes three
volumes (about 1 GB each as uint16) as TIFF slices in the Kaggle layout of 3-D fold 0 (kidney_1_dense,
kidney_2 and the validation kidney_3), then, each in a fresh process:
  * the project: ``VolumeDataModule3D`` (caches built first, outside the measurement) draws ``--crops``
    random training crops (vessel-forced with p 0.5, 3-D d4);
  * the original's way: every volume's slices read into one array in RAM, the same number of crops
    cut from them;
and prints each process's peak RSS above its imports and the crops per second of the data side.
Then it times the recipe's DynUNet training step on this machine (``--model-size``, batch 1; 0 skips)
and compares voxels per second of the data side (one process) with the model's: the data side keeps
up when it delivers more. On a GPU, ``python -m benchmarks.gpu_check --only recipe3d`` times batch 4 at 192^3.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.rss import CODE as RSS_CODE
from src.utils.settings import REPO_ROOT

GROUPS = ("kidney_1_dense", "kidney_2", "kidney_3_sparse")

CHILD_STORE = RSS_CODE + """
import sys, time
from src.data.datamodule_3d import VolumeDataModule3D
data, crops, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dm = VolumeDataModule3D(data, fold=0, img_size=size, batch_size=1, samples_per_epoch=crops, val_samples_per_epoch=1,
                        num_workers=0, progress=False)
dm.setup("fit")   # opens the (already built) caches
base = rss_now()
reset_peak()
t0 = time.perf_counter()
for i in range(crops):
    dm.train_set[i]
print(base, peak_rss(), crops / (time.perf_counter() - t0))
"""

CHILD_RAM = RSS_CODE + """
import sys, time
from pathlib import Path
import numpy as np
from src.data.datamodule_3d import d4_3d
from src.data.volumes import list_slices, read_slice
data, crops, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
base = rss_now()
reset_peak()
t0 = time.perf_counter()
volumes = []
for group in ("kidney_1_dense", "kidney_2"):
    image = np.stack([read_slice(p) for p in list_slices(data / "train" / group / "images")]).astype(np.float32)
    label = np.stack([read_slice(p) for p in list_slices(data / "train" / group / "labels")])
    volumes.append((image, label))
t_load = time.perf_counter() - t0
rng = np.random.default_rng(0)
t0 = time.perf_counter()
for i in range(crops):
    image, label = volumes[i % len(volumes)]
    z, y, x = (int(rng.integers(0, n - size + 1)) for n in image.shape)
    d4_3d(image[z:z + size, y:y + size, x:x + size], label[z:z + size, y:y + size, x:x + size] > 127, rng)
print(base, peak_rss(), crops / (time.perf_counter() - t0), t_load)
"""


def write_dataset(root: Path, shape) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    for group in GROUPS:
        n = shape[0] if group != "kidney_3_sparse" else 16
        for sub in ("images", "labels"):
            (root / "train" / group / sub).mkdir(parents=True)
        base = rng.integers(15000, 30000, size=shape[1:], dtype=np.uint16)
        vessels = np.zeros(shape[1:], np.uint8)
        vessels[shape[1] // 3 : shape[1] // 3 + 12, :] = 255
        for i in range(n):
            tifffile.imwrite(root / "train" / group / "images" / f"{i:04d}.tif", np.roll(base, i, axis=0))
            tifffile.imwrite(root / "train" / group / "labels" / f"{i:04d}.tif", np.roll(vessels, 3 * i, axis=1))
    dense = root / "train" / "kidney_3_dense" / "labels"
    dense.mkdir(parents=True)
    for i in range(4, 12):
        shutil.copy(root / "train" / "kidney_3_sparse" / "labels" / f"{i:04d}.tif", dense)


def run(code: str, *args) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return [float(v) for v in out.stdout.split()[-4:] if v] if code is CHILD_RAM else [float(v) for v in out.stdout.split()[-3:]]


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(400, 1024, 1280))
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--model-size", type=int, default=96, help="crop of the timed DynUNet step (0: skip)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bvs-volumes-"))
    try:
        data = tmp / "raw"
        write_dataset(data, args.shape)
        from src.data.datamodule_3d import VolumeDataModule3D

        VolumeDataModule3D(str(data), fold=0, img_size=args.size, val_samples_per_epoch=1, num_workers=0, progress=False).setup("fit")
        gib = np.prod(args.shape) * 2 / 2**30
        print(f"3 volumes of {args.shape[0]}x{args.shape[1]}x{args.shape[2]} uint16 ({gib:.2f} GiB each; 2 train, 1 validation), "
              f"{args.crops} crops of {args.size}^3")
        base, peak, rate = run(CHILD_STORE, data, args.crops, args.size)
        rbase, rpeak, rrate, load = run(CHILD_RAM, data, args.crops, args.size)
        print(f"{'data side':<36}{'peak RSS above imports':>24}{'crops/s':>10}")
        print(f"{'memory-mapped crops (this project)':<36}{(peak - base) / 2**20:>20.0f} MiB{rate:>10.1f}")
        print(f"{'volumes in RAM (the original)':<36}{(rpeak - rbase) / 2**20:>20.0f} MiB{rrate:>10.1f}   (+{load:.0f} s loading)")
        if args.model_size:
            from benchmarks.step3d import time_step

            step = time_step(args.model_size, batch=1, steps=3)
            data_mvox = rate * args.size**3 / 1e6
            model_mvox = step["crops_per_s"] * args.model_size**3 / 1e6
            print(f"recipe DynUNet training step here (batch 1, {args.model_size}^3, {torch_threads()} threads): "
                  f"{step['step_s']:.2f} s = {model_mvox:.3f} Mvox/s; data side {data_mvox:.1f} Mvox/s from one process: "
                  f"{data_mvox / model_mvox:.0f}x what the model consumes")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
