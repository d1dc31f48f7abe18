"""The inference engine's overhead and memory.

``python -m benchmarks.inference`` measures, on the CPU:
  1. overhead: the engine on one view of the small phantom's kidney_5 (no TTA) against the bare
     network forward over exactly the windows the engine ran (same batch sizes); prints both times,
     the time per voxel and the overhead (reading, normalising, stacking, gaussian blending, sigmoid,
     writing);
  2. memory: for each of two synthetic volumes (the second 4x the first), a fresh process predicts all
     three views into memory maps with a small block budget and reports its peak RSS above its
     imports next to the sizes of the volume, the per-view maps and the result: it should not grow
     with the volume.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from src.data.phantom import build_phantom
from src.data.volumes import VolumeStore
from src.inference.checkpoints import Member
from src.inference.engine import InferenceEngine
from src.models.module_2d import build_net
from src.utils.settings import REPO_ROOT
from benchmarks.rss import CODE as RSS_CODE

DEMO_NET = {"arch": "UnetPlusPlus", "encoder_name": "tu-efficientnet_b0", "encoder_weights": None, "in_channels": 3,
            "classes": 1, "decoder_channels": [64, 32, 16, 16, 8]}


class Recording(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.batches = net, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.net(x)


def overhead(data: Path, roi: int) -> None:
    volume = VolumeStore(progress=False).open(data / "test" / "kidney_5" / "images")
    torch.manual_seed(0)
    net = Recording(build_net(DEMO_NET).eval())
    engine = InferenceEngine([Member(net, 3)], roi_size=roi, sw_batch_size=16, slices_per_batch=4, views=("z",), progress=False)
    engine.predict(volume.sub(volume.first, volume.first + 3))  # warm-up
    net.batches.clear()
    t0 = time.perf_counter()
    engine.predict(volume)
    t_engine = time.perf_counter() - t0
    windows = list(net.batches)
    x = torch.rand(max(windows), 3, roi, roi)
    with torch.no_grad():
        t0 = time.perf_counter()
        for b in windows:
            net.net(x[:b])
        t_bare = time.perf_counter() - t0
    voxels = int(np.prod(volume.shape))
    print(f"1. overhead: kidney_5 {volume.shape[0]}x{volume.shape[1]}x{volume.shape[2]}, view z, no TTA, roi {roi}, "
          f"{sum(windows)} windows, UNet++/EfficientNet-B0, {torch.get_num_threads()} threads")
    print(f"   {'':<34}{'seconds':>10}{'us/voxel':>10}")
    print(f"   {'bare network forward':<34}{t_bare:>10.2f}{t_bare / voxels * 1e6:>10.2f}")
    print(f"   {'inference engine':<34}{t_engine:>10.2f}{t_engine / voxels * 1e6:>10.2f}")
    print(f"   overhead {100 * (t_engine / t_bare - 1):.1f} %")


CHILD = RSS_CODE + """
import sys, time
from pathlib import Path
import numpy as np, torch
from src.data.volumes import Volume
from src.inference.checkpoints import Member
from src.inference.engine import InferenceEngine
shape, folder, block = tuple(map(int, sys.argv[1:4])), Path(sys.argv[4]), int(sys.argv[5])
path = folder / "volume.npy"
data = np.load(path, mmap_mode="r")
volume = Volume(folder, data, 0, ".tif", (10000.0, 30000.0), path)
torch.manual_seed(0)
engine = InferenceEngine([Member(torch.nn.Conv2d(3, 1, 1), 3)], roi_size=512, sw_batch_size=4, block_bytes=block, progress=False)
base = rss_now()
reset_peak()
t0 = time.perf_counter()
engine.predict(volume, out=folder / "prob.npy")
print(base, peak_rss(), time.perf_counter() - t0)
"""


def memory(shape: tuple[int, int, int], block_mb: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bvs-infer-") as tmp:
        vol = np.lib.format.open_memmap(Path(tmp) / "volume.npy", mode="w+", dtype=np.uint16, shape=shape)
        rng = np.random.default_rng(0)
        for z in range(shape[0]):
            vol[z] = rng.integers(10000, 30000, size=shape[1:], dtype=np.uint16)
        vol.flush()
        del vol
        out = subprocess.run([sys.executable, "-c", CHILD, *map(str, shape), tmp, str(block_mb * 2**20)],
                             capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    base, peak, seconds = out.stdout.split()[-3:]
    rss = int(peak) - int(base)
    voxels = int(np.prod(shape))
    print(f"2. memory: volume {shape[0]}x{shape[1]}x{shape[2]} uint16 ({voxels * 2 / 2**20:.0f} MiB), three views into memory maps "
          f"(3 x {voxels * 2 / 2**20:.0f} MiB view maps + {voxels * 2 / 2**20:.0f} MiB result), block budget {block_mb} MiB")
    print(f"   peak RSS above imports {rss / 2**20:.0f} MiB = {rss / (voxels * 2):.2f} x the volume, "
          f"{rss / (voxels * 10):.2f} x everything mapped; {float(seconds):.0f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data" / "phantom"), help="small phantom (built if missing)")
    parser.add_argument("--roi", type=int, default=128)
    parser.add_argument("--shapes", type=int, nargs="+", default=(300, 512, 512, 300, 1024, 1024),
                        help="volumes of the memory test, three numbers each")
    parser.add_argument("--block-mb", type=int, default=32)
    args = parser.parse_args(argv)
    build_phantom(Path(args.data), size="small")
    overhead(Path(args.data), args.roi)
    for i in range(0, len(args.shapes) - 2, 3):
        memory(tuple(args.shapes[i : i + 3]), args.block_mb)


if __name__ == "__main__":
    main()
