"""The inference engine's plumbing, overlap, overhead and memory.

``python -m benchmarks.inference plumbing``: a null network (the model costs nothing) on a synthetic
volume, the three views one after the other and together (``mvox_s``, volume voxels per second for all
three), next to MONAI ``sliding_window_inference`` alone over the z view's windows of the same slices,
already normalised and stacked in memory (``monai_mvox_s``): what the engine's reading, normalising,
stacking, copying and writing cost on top of the sliding window itself.

``python -m benchmarks.inference overlap --device-ms 30``: a stand-in network that sleeps (releasing the
GIL, as a GPU kernel does) for ``--device-ms`` per window. The engine runs once with ``pipeline=false``
(stages one after the other: the device stage ``device_s``, the reading and writing ``host_s``) and once
pipelined (``wall_s``); the goal is ``wall_s <= 1.15 x max(device_s, host_s)``, not their sum.

Each prints one JSON object on its last line. With no sub-command (``overhead`` and ``memory``):
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

from benchmarks.rss import CODE as RSS_CODE
from src.data.phantom import build_phantom
from src.data.volumes import VolumeStore
from src.inference.checkpoints import Member
from src.inference.engine import InferenceEngine
from src.models.module_2d import build_net
from src.utils.settings import REPO_ROOT

DEMO_NET = {"arch": "UnetPlusPlus", "encoder_name": "tu-efficientnet_b0", "encoder_weights": None, "in_channels": 3,
            "classes": 1, "decoder_channels": [64, 32, 16, 16, 8]}


class Recording(torch.nn.Module):
    """The network as is, noting each forward's batch size (``batches``) and input shape (``shapes``)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.batches, self.shapes = net, [], []

    def forward(self, x):
        self.batches.append(x.shape[0])
        self.shapes.append(tuple(x.shape))
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
shape, folder, block, pipeline = tuple(map(int, sys.argv[1:4])), Path(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
path = folder / "volume.npy"
data = np.load(path, mmap_mode="r")
volume = Volume(folder, data, 0, ".tif", (10000.0, 30000.0), path)
torch.manual_seed(0)
engine = InferenceEngine([Member(torch.nn.Conv2d(3, 1, 1), 3)], roi_size=512, sw_batch_size=4, block_bytes=block, progress=False,
                         pipeline=pipeline)
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
        peaks = {}
        for pipeline in (False, True):
            out = subprocess.run([sys.executable, "-c", CHILD, *map(str, shape), tmp, str(block_mb * 2**20), str(int(pipeline))],
                                 capture_output=True, text=True, check=True, cwd=REPO_ROOT)
            base, peak, seconds = out.stdout.split()[-3:]
            peaks[pipeline] = (int(peak) - int(base), float(seconds))
    voxels = int(np.prod(shape))
    print(f"2. memory: volume {shape[0]}x{shape[1]}x{shape[2]} uint16 ({voxels * 2 / 2**20:.0f} MiB), three views into memory maps "
          f"(3 x {voxels * 2 / 2**20:.0f} MiB view maps + {voxels * 2 / 2**20:.0f} MiB result), block budget {block_mb} MiB")
    for pipeline, (rss, seconds) in peaks.items():
        print(f"   {'pipelined' if pipeline else 'one stage at a time':<20} peak RSS above imports {rss / 2**20:5.0f} MiB = "
              f"{rss / (voxels * 2):.2f} x the volume, {rss / (voxels * 10):.2f} x everything mapped; {seconds:.0f} s")
    return {f"rss_mib_{'pipelined' if p else 'serial'}": round(r / 2**20, 1) for p, (r, _) in peaks.items()}


class Null(torch.nn.Module):
    """The model that costs nothing: one output channel, the centre input channel as is."""

    def forward(self, x):
        c = x.shape[1] // 2
        return x[:, c : c + 1]


class Sleeper(Null):
    """A stand-in device: sleeps ``ms`` per window (``time.sleep`` releases the GIL, as a GPU kernel runs
    beside the host) and returns the null network's output."""

    def __init__(self, ms: float):
        super().__init__()
        self.ms, self.windows = ms, 0

    def forward(self, x):
        self.windows += x.shape[0]
        time.sleep(self.ms / 1000 * x.shape[0])
        return super().forward(x)


def synthetic_volume(folder: Path, shape: tuple[int, int, int]):
    """A uint16 noise volume as a memory map, as the volume store opens one."""
    from src.data.volumes import Volume

    path = folder / "volume.npy"
    vol = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=shape)
    rng = np.random.default_rng(0)
    for z in range(shape[0]):
        vol[z] = rng.integers(10000, 30000, size=shape[1:], dtype=np.uint16)
    vol.flush()
    del vol
    return Volume(folder, np.load(path, mmap_mode="r"), 0, ".tif", (10000.0, 30000.0), path)


def plumbing(shape: tuple[int, int, int], roi: int, sw_batch: int, slices: int, pipeline: bool = True) -> dict:
    import tempfile

    from monai.inferers import sliding_window_inference

    with tempfile.TemporaryDirectory(prefix="bvs-plumb-") as tmp:
        volume = synthetic_volume(Path(tmp), shape)
        voxels = int(np.prod(shape))
        kw = dict(roi_size=roi, sw_batch_size=sw_batch, slices_per_batch=slices, progress=False, pipeline=pipeline)
        engine = InferenceEngine([Member(Null(), 3)], views=("z",), **kw)
        engine.predict(volume.sub(0, 3))  # warm-up
        per_view = {}
        for view in ("z", "xz", "zy"):
            engine = InferenceEngine([Member(Null(), 3)], views=(view,), **kw)
            t0 = time.perf_counter()
            engine.predict(volume, out=Path(tmp) / f"{view}.npy")
            per_view[view] = voxels / (time.perf_counter() - t0) / 1e6
        engine = InferenceEngine([Member(Null(), 3)], **kw)
        t0 = time.perf_counter()
        engine.predict(volume, out=Path(tmp) / "all.npy")
        all_views = voxels / (time.perf_counter() - t0) / 1e6
        # MONAI alone: the z view's windows of the same slices, normalised and stacked beforehand
        n = min(shape[0], 4 * slices)
        stack = torch.from_numpy(volume.normalise(np.asarray(volume.data[:n]))).unsqueeze(1).repeat(1, 3, 1, 1)
        net = Null()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n, slices):
                sliding_window_inference(stack[i : i + slices], (roi, roi), sw_batch, net, overlap=0.25, mode="gaussian",
                                         padding_mode="reflect")
        monai = n * shape[1] * shape[2] / (time.perf_counter() - t0) / 1e6
    print(f"plumbing: null network, volume {shape[0]}x{shape[1]}x{shape[2]} uint16, roi {roi}, {slices} slices per forward, "
          f"sw_batch_size {sw_batch}, pipeline {pipeline}, {torch.get_num_threads()} threads")
    print(f"  {'':<44}{'Mvox/s':>8}{'vs MONAI':>10}")
    for view, rate in per_view.items():
        print(f"  {'engine, view ' + view:<44}{rate:>8.2f}{rate / monai:>10.2f}")
    print(f"  {'engine, three views (volume voxels / time)':<44}{all_views:>8.2f}{all_views / monai:>10.2f}")
    print(f"  {'MONAI sliding_window_inference alone, z':<44}{monai:>8.2f}{1:>10.2f}")
    return {"benchmark": "plumbing", "mvox_s": round(all_views, 3), "monai_mvox_s": round(monai, 3),
            "ratio": round(all_views / monai, 3), **{f"{v}_mvox_s": round(r, 3) for v, r in per_view.items()}}


def overlap(shape: tuple[int, int, int], roi: int, device_ms: float, sw_batch: int, slices: int, block_mb: int,
            views: tuple[str, ...] = ("z",)) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bvs-overlap-") as tmp:
        volume = synthetic_volume(Path(tmp), shape)
        runs = {}
        for pipeline in (False, True):
            net = Sleeper(device_ms)
            engine = InferenceEngine([Member(net, 3)], roi_size=roi, sw_batch_size=sw_batch, slices_per_batch=slices,
                                     block_bytes=block_mb * 2**20, progress=False, pipeline=pipeline, views=views)
            t0 = time.perf_counter()
            engine.predict(volume, out=Path(tmp) / f"p{int(pipeline)}.npy")
            runs[pipeline] = (time.perf_counter() - t0, dict(engine.timings), net.windows)
    serial_wall, t, windows = runs[False]
    device_s, host_s = t["device"], t["read"] + t["write"]
    wall_s = runs[True][0]
    goal = 1.15 * max(device_s, host_s)
    print(f"overlap: a network sleeping {device_ms} ms per window ({windows} windows), volume {shape[0]}x{shape[1]}x{shape[2]}, "
          f"view(s) {'/'.join(views)}, roi {roi}, blocks of {block_mb} MiB")
    print(f"  device stage (windows, normalising, stacking, blending)  {device_s:8.2f} s")
    print(f"  host stages (reading, copying back, writing)              {host_s:8.2f} s")
    print(f"  one after the other (pipeline=false)                      {serial_wall:8.2f} s")
    print(f"  pipelined                                                 {wall_s:8.2f} s  "
          f"({wall_s / max(device_s, host_s):.2f} x max(device, host); goal <= 1.15: {'met' if wall_s <= goal else 'NOT met'})")
    return {"benchmark": "overlap", "wall_s": round(wall_s, 3), "device_s": round(device_s, 3), "host_s": round(host_s, 3),
            "serial_s": round(serial_wall, 3), "ratio": round(wall_s / max(device_s, host_s), 3)}


def gpu(shape: tuple[int, int, int], roi: int, sw_batch: int, slices: int, encoder: str, tta: str,
        views: tuple[str, ...], device: str = "cuda", compile_: bool = False, replicas: bool = True) -> dict:
    """End-to-end engine throughput against the bare forward of the same windows on one device.

    A UNet++ with ``encoder`` (random weights: the time does not depend on them) predicts a synthetic
    volume with the engine (float16 autocast on CUDA, channels-last, pipelined), one view at a time: a
    first run (cudnn.benchmark tunes each new input shape there), then a timed run whose every forward's
    input shape is recorded; the bare network then runs exactly those shapes back to back from tensors
    already on the device (same autocast, memory format and ``inference_mode``), credited with the real
    windows only (the engine pads a short batch to a fixed shape on CUDA). ``ratio`` is bare time /
    engine time: the share of the device's own throughput the whole engine (reading, normalising,
    stacking, padding, blending, copying back, writing) delivers. Each view's line is printed as soon as
    it is measured. Then: the engine's ``estimate`` against the measured time, and (``replicas``) two
    replicas on this one device (``devices=[d, d]``, the several-GPU path) against one (maximum
    difference in probability).
    """
    import tempfile

    import segmentation_models_pytorch as smp

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    net = smp.create_model("UnetPlusPlus", encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1)
    rec = Recording(net)
    kw = dict(roi_size=roi, sw_batch_size=sw_batch, slices_per_batch=slices, device=dev, progress=False)
    result: dict = {"benchmark": "gpu", "device": torch.cuda.get_device_name(dev) if cuda else "cpu", "encoder": encoder,
                    "shape": list(shape), "roi": roi, "sw_batch_size": sw_batch, "slices_per_batch": slices, "tta": tta,
                    "views": list(views), "torch": torch.__version__, "per_view": {}}
    voxels = int(np.prod(shape))
    print(f"gpu: UNet++/{encoder}, volume {shape[0]}x{shape[1]}x{shape[2]}, roi {roi}, tta {tta}, sw_batch_size {sw_batch}, "
          f"{slices} slices per forward, on {result['device']}", flush=True)
    print(f"  {'view':<6}{'first s':>9}{'engine s':>10}{'bare s':>9}{'ratio':>7}{'forwards':>10}{'padding':>9}  stages (s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bvs-gpu-") as tmp:
        volume = synthetic_volume(Path(tmp), shape)
        fmt = torch.channels_last if cuda else torch.contiguous_format
        t_engine = t_bare = 0.0
        for view in views:
            engine = InferenceEngine([Member(rec, 3, tta=tta)], compile=compile_, views=(view,), **kw)
            t0 = time.perf_counter()
            engine.predict(volume, out=Path(tmp) / "warm.npy")  # cudnn.benchmark tunes here
            sync()
            first = time.perf_counter() - t0
            rec.shapes.clear()
            engine.timings = dict.fromkeys(engine.timings, 0.0)
            engine.window_counts = dict.fromkeys(engine.window_counts, 0)
            t0 = time.perf_counter()
            engine.predict(volume, out=Path(tmp) / "prob.npy")
            sync()
            t_view = time.perf_counter() - t0
            shapes = list(rec.shapes)
            inputs = {s: torch.rand(s, device=dev).contiguous(memory_format=fmt) for s in set(shapes)}
            bare_net = engine.replicas[0].nets[0]
            with torch.inference_mode(), torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=cuda):
                for s in inputs:
                    bare_net(inputs[s])
                sync()
                t0 = time.perf_counter()
                for s in shapes:
                    bare_net(inputs[s])
                sync()
                bare = time.perf_counter() - t0
            del inputs
            counts = engine.window_counts
            useful = counts["windows"] / max(1, counts["windows"] + counts["padding"]) if cuda else 1.0
            bare *= useful
            t_engine, t_bare = t_engine + t_view, t_bare + bare
            stages = {k: round(v, 2) for k, v in engine.timings.items()}
            result["per_view"][view] = {"first_s": round(first, 3), "engine_s": round(t_view, 3), "bare_s": round(bare, 3),
                                        "ratio": round(bare / t_view, 3), "forwards": len(shapes),
                                        "padding_share": round(1 - useful, 4), "stage_s": stages}
            print(f"  {view:<6}{first:>9.2f}{t_view:>10.2f}{bare:>9.2f}{bare / t_view:>7.2f}{len(shapes):>10}{1 - useful:>9.1%}  {stages}",
                  flush=True)
        result.update(engine_s=round(t_engine, 3), engine_mvox_s=round(voxels / t_engine / 1e6, 3), bare_s=round(t_bare, 3),
                      bare_mvox_s=round(voxels / t_bare / 1e6, 3), ratio=round(t_bare / t_engine, 3))
        print(f"  all views: engine {t_engine:.2f} s ({result['engine_mvox_s']:.2f} Mvox/s), bare {t_bare:.2f} s; engine / bare "
              f"throughput {result['ratio']:.2f} (goal >= 0.80: {'met' if result['ratio'] >= 0.8 else 'NOT met'})", flush=True)
        engine = InferenceEngine([Member(rec, 3, tta=tta)], compile=compile_, views=views, **kw)
        rows = engine.estimate({"volume": shape})
        result["estimate_s"] = round(sum(r["seconds"] for r in rows), 3)
        print(f"  estimate {result['estimate_s']:.2f} s against {t_engine:.2f} s measured", flush=True)
        if replicas and not compile_:  # the several-device path on this one device: two replicas sharing a work queue
            one = np.array(engine.predict(volume, out=Path(tmp) / "one.npy"), dtype=np.float32)
            two = InferenceEngine([Member(net, 3, tta=tta)], devices=[str(dev), str(dev)], views=views, **kw)
            t0 = time.perf_counter()
            both = np.array(two.predict(volume, out=Path(tmp) / "two.npy"), dtype=np.float32)
            sync()
            result.update(two_replicas_s=round(time.perf_counter() - t0, 3), two_replicas_max_abs_diff=float(np.abs(both - one).max()))
            print(f"  two replicas on this device: {result['two_replicas_s']:.2f} s, max |difference| "
                  f"{result['two_replicas_max_abs_diff']:.2g}", flush=True)
    return result


def main(argv=None):
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="overhead+memory", choices=("plumbing", "overlap", "gpu", "overhead+memory"))
    parser.add_argument("--data", default=str(REPO_ROOT / "data" / "phantom"), help="small phantom (built if missing)")
    parser.add_argument("--roi", type=int, default=None, help="window (plumbing, overlap: 800; overhead: 128)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="plumbing / overlap volume (default 160 1303 912 / 96 1303 912)")
    parser.add_argument("--views", nargs="+", default=None,
                        help="views predicted (overlap default z: host and device work comparable; gpu default all three)")
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--slices", type=int, default=4, help="slices per forward (engine.slices_per_batch)")
    parser.add_argument("--device-ms", type=float, default=30.0, help="overlap: the stand-in network's milliseconds per window")
    parser.add_argument("--serial", action="store_true", help="plumbing: pipeline=false")
    parser.add_argument("--shapes", type=int, nargs="+", default=(300, 512, 512, 300, 1024, 1024),
                        help="volumes of the memory test, three numbers each")
    parser.add_argument("--block-mb", type=int, default=32)
    parser.add_argument("--encoder", default="tu-tf_efficientnet_b5", help="gpu: the UNet++ encoder (recipe: B5, B6)")
    parser.add_argument("--tta", default="none", help="gpu: none | flip | d4")
    parser.add_argument("--device", default="cuda", help="gpu: the device")
    parser.add_argument("--compile", action="store_true", help="gpu: engine.compile=true")
    parser.add_argument("--no-replicas", action="store_true", help="gpu: skip the two-replicas-on-one-device check")
    args = parser.parse_args(argv)
    if args.what == "gpu":
        result = gpu(tuple(args.shape or (64, 1303, 912)), args.roi or 512, args.sw_batch_size, args.slices, args.encoder,
                     args.tta, tuple(args.views or ("z", "xz", "zy")), args.device, args.compile, not args.no_replicas)
        print(json.dumps(result))
        return result
    if args.what == "plumbing":
        result = plumbing(tuple(args.shape or (160, 1303, 912)), args.roi or 800, args.sw_batch_size, args.slices, not args.serial)
        print(json.dumps(result))
        return result
    if args.what == "overlap":
        result = overlap(tuple(args.shape or (96, 1303, 912)), args.roi or 800, args.device_ms, args.sw_batch_size, args.slices,
                         args.block_mb, tuple(args.views or ("z",)))
        print(json.dumps(result))
        return result
    build_phantom(Path(args.data), size="small")
    overhead(Path(args.data), args.roi or 128)
    for i in range(0, len(args.shapes) - 2, 3):
        memory(tuple(args.shapes[i : i + 3]), args.block_mb)


if __name__ == "__main__":
    main()
