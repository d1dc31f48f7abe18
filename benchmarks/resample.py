"""Memory and speed of resampling a volume to another voxel size: z-chunks against the whole volume in RAM.

``python -m benchmarks.resample [--shape 300 1024 1024] [--factor 1.2616] [--chunk 16]`` writes a uint16
volume (600 MiB by default) as a ``.npy`` in a temporary folder, then, each in a fresh process, resamples
it by ``--factor`` (63.08 um to 50 um by default) to a uint16 ``.npy``:
  * the project: ``resample_to_file`` on the memory-mapped volume (z-chunks, cv2 in-plane);
  * the naive way: ``np.load`` of the whole volume, a float32 copy, ``torch.nn.functional.interpolate``
    (trilinear, align_corners=False), rounded back to uint16 and saved;
and prints each process's peak RSS above its imports, its time, their ratios and the largest difference
between the two results. ``--shape`` shrinks the volume where the naive way does not fit in RAM.
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

CHILD_CHUNKED = RSS_CODE + """
import sys, time
import numpy as np
from src.inference.resample import resample_to_file
src_path, out_path, z, h, w, chunk = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
base = rss_now()
reset_peak()
t0 = time.perf_counter()
src = np.load(src_path, mmap_mode="r")
resample_to_file(src, (z, h, w), out_path, chunk=chunk)
print(base, peak_rss(), time.perf_counter() - t0)
"""

CHILD_NAIVE = RSS_CODE + """
import sys, time
import numpy as np
import torch
import torch.nn.functional as F
src_path, out_path, z, h, w = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
base = rss_now()
reset_peak()
t0 = time.perf_counter()
volume = np.asarray(np.load(src_path))
x = torch.from_numpy(volume.astype(np.float32))[None, None]
y = F.interpolate(x, size=(z, h, w), mode="trilinear", align_corners=False)[0, 0]
np.save(out_path, y.round_().clamp_(0, 65535).numpy().astype(np.uint16))
print(base, peak_rss(), time.perf_counter() - t0)
"""


def write_volume(path: Path, shape: tuple[int, int, int], chunk: int = 16) -> None:
    """A uint16 volume with smooth structure and noise, written chunk by chunk into a ``.npy``."""
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=shape)
    yy, xx = np.mgrid[: shape[1], : shape[2]].astype(np.float32)
    for z0 in range(0, shape[0], chunk):
        for z in range(z0, min(shape[0], z0 + chunk)):
            plane = 20000 + 8000 * np.sin(xx / 37 + z / 11) * np.cos(yy / 53) + rng.normal(0, 500, shape[1:])
            out[z] = np.clip(plane, 0, 65535).astype(np.uint16)
        out.flush()
    del out


def run(code: str, *args) -> tuple[float, float, float]:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr}")
    base, peak, seconds = (float(v) for v in done.stdout.split()[-3:])
    return base, peak, seconds


def max_difference(a_path: Path, b_path: Path, chunk: int = 16) -> int:
    a, b = np.load(a_path, mmap_mode="r"), np.load(b_path, mmap_mode="r")
    worst = 0
    for z0 in range(0, a.shape[0], chunk):
        d = np.abs(a[z0:z0 + chunk].astype(np.int32) - b[z0:z0 + chunk].astype(np.int32))
        worst = max(worst, int(d.max()))
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 1024, 1024))
    parser.add_argument("--factor", type=float, default=63.08 / 50)
    parser.add_argument("--chunk", type=int, default=16)
    args = parser.parse_args(argv)
    from src.inference.resample import resampled_shape

    shape = tuple(args.shape)
    target = resampled_shape(shape, args.factor)
    tmp = Path(tempfile.mkdtemp(prefix="bvs-resample-"))
    try:
        src = tmp / "volume.npy"
        write_volume(src, shape)
        mib_in, mib_out = np.prod(shape) * 2 / 2**20, np.prod(target) * 2 / 2**20
        print(f"uint16 volume {shape[0]}x{shape[1]}x{shape[2]} ({mib_in:.0f} MiB) resampled by {args.factor:.4f} "
              f"to {target[0]}x{target[1]}x{target[2]} ({mib_out:.0f} MiB), each way in a fresh process")
        if shape != (300, 1024, 1024):
            print("(volume shrunk from the default 300x1024x1024 by --shape)")
        base, peak, seconds = run(CHILD_CHUNKED, src, tmp / "chunked.npy", *target, args.chunk)
        nbase, npeak, nseconds = run(CHILD_NAIVE, src, tmp / "naive.npy", *target)
        mine, naive = (peak - base) / 2**20, (npeak - nbase) / 2**20
        print(f"{'resampling':<50}{'peak RSS above imports':>24}{'time':>10}")
        print(f"{f'z-chunks, memory maps (chunk={args.chunk}, this project)':<50}{mine:>20.0f} MiB{seconds:>9.1f}s")
        print(f"{'whole volume, float32 torch trilinear':<50}{naive:>20.0f} MiB{nseconds:>9.1f}s")
        print(f"{'ratio naive / project':<50}{naive / max(mine, 1e-9):>23.1f}x{nseconds / seconds:>9.2f}x")
        worst = max_difference(tmp / "chunked.npy", tmp / "naive.npy")
        print(f"largest difference between the two uint16 results: {worst}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
