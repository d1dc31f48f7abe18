"""Peak memory of the projections (``generate_mutliview.py``) against loading the volume into RAM.

``python -m benchmarks.projections [--shape 256 768 1024]`` writes one uint16 image volume and its
uint8 labels as TIFF slices into a temporary Kaggle-style folder, then runs, each in a fresh process:
  * the project: volume store (cache build) + both projections, streamed from the memory map;
  * the naive way: every slice read into one in-RAM array (as the original does), transposed, written;
and prints each process's peak RSS above its own import baseline, as a multiple of the image volume's size.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.rss import CODE as RSS_CODE

CHILD_PROJECT = RSS_CODE + """
import sys
from src.data.multiview import project_split
base = rss_now()
reset_peak()
project_split(sys.argv[1], ("train",), progress=False)
print(base, peak_rss())
"""

CHILD_NAIVE = RSS_CODE + """
import sys
from pathlib import Path
import numpy as np
from src.data.volumes import list_slices, read_slice, write_slice
base = rss_now()
reset_peak()
root = Path(sys.argv[1]) / "train" / "kidney_1_dense"
for sub in ("images", "labels"):
    vol = np.stack([read_slice(p) for p in list_slices(root / sub)])
    for view, order in (("xz", (1, 2, 0)), ("zy", (2, 0, 1))):
        out = Path(sys.argv[1]) / "naive" / view / sub
        out.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(vol.transpose(order)):
            write_slice(out / f"{i:04d}.tif", s)
    del vol
print(base, peak_rss())
"""


def write_phantom_volume(root: Path, shape, seed=0):
    import tifffile

    rng = np.random.default_rng(seed)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(shape[0]):
        img = rng.integers(15000, 40000, size=shape[1:], dtype=np.uint16)
        tifffile.imwrite(root / "images" / f"{i:04d}.tif", img)
        tifffile.imwrite(root / "labels" / f"{i:04d}.tif", ((img > 39000) * 255).astype(np.uint8))


def run_child(code: str, data: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    base, peak = map(int, out.stdout.split()[-2:])
    return peak - base, time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 768, 1024))
    parser.add_argument("--keep", action="store_true", help="keep the temporary data")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bvs-bench-"))
    try:
        write_phantom_volume(tmp / "train" / "kidney_1_dense", args.shape)
        volume = int(np.prod(args.shape)) * 2
        print(f"volume {args.shape[0]}x{args.shape[1]}x{args.shape[2]} uint16 = {volume / 2**20:.0f} MiB (+ uint8 labels)")
        rows = [("project (memory-mapped store)", *run_child(CHILD_PROJECT, tmp)),
                ("naive (whole volume in RAM)", *run_child(CHILD_NAIVE, tmp))]
        print(f"{'method':<32}{'peak RSS above imports':>24}{'x volume':>10}{'seconds':>10}")
        for name, rss, secs in rows:
            print(f"{name:<32}{rss / 2**20:>20.0f} MiB{rss / volume:>10.2f}{secs:>10.1f}")
        print(f"memory ratio naive / project: {rows[1][1] / max(rows[0][1], 1):.1f}x")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
