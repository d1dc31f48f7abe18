"""The inference engine: a volume and a weighted ensemble of 2.5-D models -> a probability volume.

For each requested view (``z``: the volume's own slices, ``xz`` and ``zy``: the recipe's
projections, ``v.transpose(1, 2, 0)`` and ``v.transpose(2, 0, 1)``, so each model sees slices in the
orientation it was trained on), the volume is read in slabs of consecutive slices from its memory
map, normalised with the volume's statistics, stacked into each model's ``in_channels`` neighbours
(zeros beyond the ends), run through MONAI's sliding window with the member's test-time augmentation,
and the members' logits are averaged with their weights; the sigmoid of that is averaged over views.
Each view's probabilities go to a float16 map in that view's orientation (written in contiguous
blocks), and the result is their mean; with ``out`` a path all of them are memory maps, so a volume
larger than RAM works: resident memory is a few blocks whatever the volume's size.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices

from src.data.registry import VIEW_AXES, VIEWS
from src.data.volumes import Volume, flush_rows, read_view_block, release_pages
from src.inference.checkpoints import Member
from src.inference.sliding import sliding_window
from src.inference.tta import tta_views, with_tta
from src.utils.errors import UserError
from src.utils.files import atomic_output, write_text_atomic
from src.utils.options import look_up_all
from src.utils.precision import autocast_dtype
from src.utils.progress import progress_bar
from src.utils.sizes import size_tuple


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def reflect_pad_to(x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad (..., H, W) symmetrically to at least ``size`` by reflection, also when the pad exceeds the
    image (torch's reflect pad cannot: this repeats it), e.g. a 3-slice volume seen from the side."""
    h, w = x.shape[-2:]
    top, left = max(0, size[0] - h) // 2, max(0, size[1] - w) // 2
    bottom, right = max(0, size[0] - h) - top, max(0, size[1] - w) - left
    pads = [top, bottom, left, right]
    while any(pads):
        ch, cw = x.shape[-2:]
        step = [min(pads[0], ch - 1), min(pads[1], ch - 1), min(pads[2], cw - 1), min(pads[3], cw - 1)]
        if not any(step):  # a single row or column: replicate
            x = F.pad(x, (pads[2], pads[3], pads[0], pads[1]), mode="replicate")
            break
        x = F.pad(x, (step[2], step[3], step[0], step[1]), mode="reflect")
        pads = [p - s for p, s in zip(pads, step)]
    return x, (top, bottom, left, right)


DEFAULT_ROI = 512  # for a checkpoint that does not record its training window


def window_of(roi_size, member: Member) -> tuple[int, int]:
    """The 2-D sliding-window roi for ``member``: ``roi_size`` (an int or a pair) when given, else the
    window the member's training run validated with, so prediction sees what validation saw."""
    if roi_size is not None:
        roi, what = roi_size, "engine.roi_size"
    else:
        roi, what = member.roi_size or DEFAULT_ROI, f"{member.name}: the recorded val_window.roi_size"
    return size_tuple(roi, 2, what)  # type: ignore[return-value]


def resolve_devices(devices, device: torch.device) -> list[torch.device]:
    """``engine.devices``: null (the engine's ``device`` alone), ``auto`` (every visible GPU when
    ``device`` is CUDA, else ``device``), an int N (the first N GPUs) or a list of GPU ids / device names."""
    from omegaconf import ListConfig

    if devices is None:
        return [device]
    count = torch.cuda.device_count()
    if devices == "auto":  # every GPU when the engine runs on CUDA at all
        return [torch.device("cuda", i) for i in range(count)] if device.type == "cuda" and count else [device]
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1 or devices > count:
            raise UserError(f"engine.devices={devices}: {count} GPU(s) visible")
        return [torch.device("cuda", i) for i in range(devices)]
    if isinstance(devices, (list, tuple, ListConfig)) and devices:
        out = []
        for d in devices:
            dev = torch.device("cuda", d) if isinstance(d, int) else torch.device(str(d))
            if dev.type == "cuda" and (dev.index or 0) >= count:
                raise UserError(f"engine.devices: {dev} requested, {count} GPU(s) visible")
            out.append(dev)
        return out
    raise UserError(f"engine.devices must be null, auto, a number of GPUs or a list of ids, got {devices!r}")


def padded_window(hw: Sequence[int], roi: tuple[int, int], multiple: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size to pad the image to, window) for an (h, w) image: a side at least the roi keeps it; a
    thinner side (an xz slice of a thin volume) is padded only to the next multiple of ``multiple``
    (the network's down-sampling factor) and windowed at that size, not at the full roi."""
    pad, win = [], []
    for d, r in zip(hw, roi):
        target = d if d >= r else min(r, -(-d // multiple) * multiple)
        pad.append(target)
        win.append(min(r, target))
    return (pad[0], pad[1]), (win[0], win[1])


class FixedBatch:
    """``net`` on batches padded to ``size`` (with copies of the last window; the extra outputs are
    dropped), so that the network sees one input shape per window size. ``counts`` gathers the windows
    run and the padding added."""

    def __init__(self, net: Callable[[torch.Tensor], torch.Tensor], size: int, counts: dict | None = None):
        self.net, self.size, self.counts = net, size, counts

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        missing = -n % self.size
        if self.counts is not None:
            self.counts["windows"] += n
            self.counts["padding"] += missing
        if not missing:
            return self.net(x)
        batch = torch.cat([x, x[-1:].expand(missing, *x.shape[1:])])
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self.net(batch)[:n]


@dataclass
class _Replica:
    """The ensemble's networks on one device."""

    device: torch.device
    nets: list[torch.nn.Module]


class _Stop(Exception):
    """Another stage of the pipeline failed: this one stops quietly."""


def _put(q: queue.Queue, item, failed: threading.Event) -> None:
    while True:
        if failed.is_set():
            raise _Stop
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, failed: threading.Event):
    while True:
        if failed.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


_END = object()


@dataclass
class InferenceEngine:
    """Sliding-window 2.5-D inference of a weighted ensemble over one or more views of a volume.

    Per device, a view is predicted by three stages joined by bounded queues (``pipeline``): a reader
    thread copies uint16 blocks of slices out of the memory map (into pinned memory on CUDA), the
    device normalises them, stacks each slice's neighbours, runs every window of several slices and of
    every flip of the test-time augmentation in shared forwards, and a writer thread copies the
    probabilities back and hands them to ``write``. With several ``devices`` each runs its own three
    stages on blocks taken from one shared work queue. ``pipeline=false`` runs the same stages one
    after the other on one thread (the results are identical).
    """

    members: Sequence[Member]
    roi_size: int | tuple[int, int] | None = None  # None: each member's training window (512 if unknown)
    overlap: float = 0.25
    mode: str = "gaussian"
    padding_mode: str = "reflect"
    sw_batch_size: int = 8
    slices_per_batch: int = 4
    views: Sequence[str] = VIEWS
    device: str | torch.device | None = "auto"
    amp: bool = True
    progress: bool = True
    block_bytes: int = 256 * 2**20  # float32 slices read and predicted per block
    devices: object = None  # None: ``device`` alone; "auto", N or a list: see resolve_devices
    pipeline: bool = True  # reader and writer threads beside the device's work
    prefetch: int = 1  # blocks read ahead of (and written behind) the device, per device
    compile: bool = False  # torch.compile each network (fixed window shapes)
    channels_last: bool = True  # on CUDA
    pad_multiple: int = 32  # the networks' down-sampling factor: thin sides are padded to a multiple of it
    fixed_batch: bool | None = None  # pad short window batches to one shape per window size (None: on CUDA, for cudnn.benchmark)
    _device: torch.device = field(init=False, repr=False)

    def __post_init__(self):
        if not self.members:
            raise UserError("the inference engine needs at least one model")
        look_up_all(self.views, VIEWS, "engine.views")
        for m in self.members:
            tta_views(m.tta, 2, f"{m.name or 'a model'}: tta")  # an unknown mode fails here, before any work
        self._device = resolve_device(self.device)
        self._devices = resolve_devices(self.devices, self._device)
        self._device = self._devices[0]
        self.replicas = [self._replica(d, copy=i > 0) for i, d in enumerate(self._devices)]
        self.rois = [window_of(self.roi_size, m) for m in self.members]
        self.total_weight = float(sum(m.weight for m in self.members))
        if self.total_weight <= 0:
            raise UserError("ensemble weights must sum to a positive number")
        self.timings = {"read": 0.0, "device": 0.0, "write": 0.0}  # seconds spent in each stage, summed
        self.window_counts = {"windows": 0, "padding": 0}  # with fixed_batch: windows run, and padding added
        self._timing_lock = threading.Lock()

    def _timed(self, stage: str, func: Callable) -> Callable:
        def timed(*args):
            t0 = time.perf_counter()
            try:
                return func(*args)
            finally:
                with self._timing_lock:
                    self.timings[stage] += time.perf_counter() - t0
        return timed

    def _replica(self, device: torch.device, copy: bool) -> _Replica:
        nets = []
        for m in self.members:
            net = (deepcopy(m.net) if copy else m.net).to(device).eval()
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True  # the window shapes are fixed
                if self.channels_last:
                    net = net.to(memory_format=torch.channels_last)
            if self.compile:
                net = torch.compile(net)
            nets.append(net)
        return _Replica(device, nets)

    # ------------------------------------------------------------------ one batch of slices
    def slices_per_forward(self, hw: tuple[int, int]) -> int:
        """``slices_per_batch`` for slices as large as the roi; proportionally more for smaller (padded)
        slices, so that a forward holds about the same number of pixels whatever the view."""
        area = max(r[0] * r[1] for r in self.rois)
        pad_to = [padded_window(hw, r, self.pad_multiple)[0] for r in self.rois]
        slice_area = max(max(p[0] * p[1] for p in pad_to), 1)
        return max(self.slices_per_batch, self.slices_per_batch * area // slice_area)

    def window_batch(self, hw: tuple[int, int], roi: tuple[int, int]) -> int:
        """Windows per forward for (h, w) slices: ``sw_batch_size`` for roi-sized windows, proportionally
        more for smaller ones (thin sides: about the same pixels per forward), but no more than one
        forward of ``slices_per_forward`` slices holds (a larger batch would only be padding)."""
        pad_to, window = padded_window(hw, roi, self.pad_multiple)
        scaled = max(self.sw_batch_size, self.sw_batch_size * (roi[0] * roi[1]) // (window[0] * window[1]))
        interval = [w if w == p else max(int(w * (1 - self.overlap)), 1) for p, w in zip(pad_to, window)]
        per_slice = len(dense_patch_slices(pad_to, window, interval))  # MONAI's own window placement
        return max(1, min(scaled, per_slice * self.slices_per_forward(hw)))

    def _sliding_window(self, net: torch.nn.Module, x: torch.Tensor, roi: tuple[int, int]) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_to, window = padded_window((h, w), roi, self.pad_multiple)
        sw_batch = self.window_batch((h, w), roi)
        x, (top, bottom, left, right) = reflect_pad_to(x, pad_to)
        cuda = x.device.type == "cuda"
        if cuda and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.fixed_batch or (self.fixed_batch is None and cuda):
            # every forward of this window holds exactly sw_batch windows: a short last batch would be a
            # new input shape, and cudnn.benchmark tunes every layer again for each (seconds per shape)
            net = FixedBatch(net, sw_batch, self.window_counts)
        y = sliding_window(x, net, window, sw_batch, self.overlap, self.mode, self.padding_mode)
        return y[..., top : y.shape[-2] - bottom, left : y.shape[-1] - right]

    def _logits(self, replica: _Replica, stacks: dict[int, torch.Tensor]) -> torch.Tensor:
        total = None
        dtype = autocast_dtype(replica.device, self.amp)
        for m, net, roi in zip(self.members, replica.nets, self.rois):
            x = stacks[m.in_channels].to(replica.device, non_blocking=True)
            with torch.autocast(device_type=replica.device.type, dtype=dtype, enabled=dtype is not None):
                y = with_tta(lambda t, net=net, roi=roi: self._sliding_window(net, t, roi), x, m.tta).float()
            total = m.weight * y if total is None else total + m.weight * y
        return total / self.total_weight

    @torch.inference_mode()
    def logits(self, stacks: dict[int, torch.Tensor]) -> torch.Tensor:
        """Weighted mean of the members' logits for (B, C, H, W) stacks keyed by channel count."""
        return self._logits(self.replicas[0], stacks)

    # ------------------------------------------------------------------ a view of a volume
    def view_shape(self, volume: Volume, view: str) -> tuple[int, int, int]:
        return tuple(volume.shape[a] for a in VIEW_AXES[view])  # type: ignore[return-value]

    def blocks_of(self, volume: Volume, view: str, start: int = 0) -> list[tuple[int, int]]:
        """The (b0, b1) slice blocks of ``view`` from ``start`` on, about ``block_bytes`` of float32 each
        (a third of that when pipelined)."""
        n, height, width = self.view_shape(volume, view)
        # pipelined, up to five blocks are alive at once (read, queued, predicted, queued, written):
        # third-size blocks keep the resident memory near the one-stage-at-a-time engine's
        budget = self.block_bytes // 3 if self.pipeline else self.block_bytes
        block = max(1, budget // (height * width * 4) // self.slices_per_batch) * self.slices_per_batch
        return [(b0, min(n, b0 + block)) for b0 in range(start, n, block)]

    def predict_view(self, volume: Volume, view: str, write: Callable[[int, int, np.ndarray], None], start: int = 0,
                     name: str = "") -> None:
        """Predict every slice of ``view`` from slice ``start`` on, in the view's orientation.

        The volume is read a block of slices at a time (about ``block_bytes`` of float32, read once
        and transposed into contiguous memory: a strided view of a large memory map is read in few
        passes), predicted ``slices_per_batch`` at a time, and handed to ``write(b0, b1, probs)`` as
        float32 probabilities of slices b0..b1-1. With one device blocks arrive in order; with
        several, each block arrives once, in about that order (``write`` must accept that).
        """
        blocks = self.blocks_of(volume, view, start)
        todo: queue.Queue = queue.Queue()
        for b in blocks:
            todo.put(b)
        failed = threading.Event()
        errors: list[BaseException] = []
        n = self.view_shape(volume, view)[0]
        with progress_bar(n - start, f"{name} {view}".strip(), self.progress) as advance:
            jobs = [lambda rep=rep: self._run_device(rep, volume, view, todo, write, advance, failed, errors)
                    for rep in self.replicas]
            if len(jobs) == 1:
                jobs[0]()
            else:
                threads = [threading.Thread(target=job, name=f"engine-{rep.device}", daemon=True)
                           for job, rep in zip(jobs, self.replicas)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        if errors:
            raise errors[0]

    def _run_device(self, rep: _Replica, volume: Volume, view: str, todo: queue.Queue, write, advance,
                    failed: threading.Event, errors: list) -> None:
        """Read, predict and write blocks from ``todo`` on one device until it is empty."""
        order = VIEW_AXES[view]
        n = self.view_shape(volume, view)[0]
        r = max(m.in_channels for m in self.members) // 2
        cuda = rep.device.type == "cuda"

        def blocks():
            while not failed.is_set():
                try:
                    yield todo.get_nowait()
                except queue.Empty:
                    return

        def read(b0: int, b1: int):
            lo, hi = max(0, b0 - r), min(n, b1 + r)
            raw = torch.from_numpy(read_view_block(volume.data, order, lo, hi))
            return b0, b1, lo, raw.pin_memory() if cuda else raw

        def compute(b0: int, b1: int, lo: int, raw: torch.Tensor):
            out = self._predict_block(rep, volume, raw, lo, b0, b1, n, advance)
            if not cuda:
                return b0, b1, out, None
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return b0, b1, host, done

        def store(b0: int, b1: int, host: torch.Tensor, done) -> None:
            if done is not None:
                done.synchronize()
            write(b0, b1, host.numpy())

        read, compute, store = self._timed("read", read), self._timed("device", compute), self._timed("write", store)
        try:
            with torch.cuda.device(rep.device) if cuda else nullcontext():
                if not self.pipeline:
                    for b0, b1 in blocks():
                        store(*compute(*read(b0, b1)))
                else:
                    self._pipelined(blocks(), read, compute, store, failed)
        except _Stop:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            failed.set()
            errors.append(err)

    def _pipelined(self, blocks, read, compute, store, failed: threading.Event) -> None:
        """``store(compute(read(b)))`` for every block, reading ahead and writing behind in threads."""
        inbox: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        outbox: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        problems: list[BaseException] = []

        def reader():
            try:
                for b in blocks:
                    _put(inbox, read(*b), failed)
                _put(inbox, _END, failed)
            except _Stop:
                pass
            except BaseException as err:  # noqa: BLE001
                problems.append(err)
                failed.set()

        def writer():
            try:
                while (item := _get(outbox, failed)) is not _END:
                    store(*item)
            except _Stop:
                pass
            except BaseException as err:  # noqa: BLE001
                problems.append(err)
                failed.set()

        threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
        for t in threads:
            t.start()
        try:
            while (item := _get(inbox, failed)) is not _END:
                _put(outbox, compute(*item), failed)
        except _Stop:
            pass
        except BaseException as err:  # noqa: BLE001
            problems.append(err)
        finally:
            # blocks already predicted are still written before the error surfaces
            while True:
                try:
                    outbox.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if not threads[1].is_alive():
                        break
            threads[1].join()
            if problems:
                failed.set()
            threads[0].join()
        if problems:
            raise problems[0]

    @torch.inference_mode()
    def _predict_block(self, rep: _Replica, volume: Volume, raw: torch.Tensor, lo: int, b0: int, b1: int, n: int,
                       advance: Callable[[int], None]) -> torch.Tensor:
        """Probabilities (float32, on the device) of slices b0..b1-1 from the raw slices lo.. of the view."""
        if volume.stats is None:
            raise ValueError(f"{volume.folder}: no normalisation statistics (label volume?)")
        low, high = volume.stats
        raw = raw.to(rep.device, non_blocking=True)
        padded = torch.empty((1 + raw.shape[0], *raw.shape[1:]), dtype=torch.float32, device=rep.device)
        padded[0] = 0  # index 0: the zeros beyond the ends of the view
        slab = padded[1:]
        slab.copy_(raw)
        slab.sub_(low).div_(max(high - low, 1e-6)).clamp_(0.0, 1.0)  # Volume.normalise, on the device
        out = torch.empty((b1 - b0, *raw.shape[1:]), dtype=torch.float32, device=rep.device)
        channels = sorted({m.in_channels for m in self.members})
        step = self.slices_per_forward(tuple(raw.shape[1:]))
        for i0 in range(b0, b1, step):
            i1 = min(b1, i0 + step)
            stacks = {}
            for c in channels:
                src = torch.arange(i0, i1, device=rep.device)[:, None] + torch.arange(c, device=rep.device)[None] - c // 2
                index = torch.where((src >= 0) & (src < n), src - lo + 1, torch.zeros_like(src))
                stacks[c] = padded[index]
            out[i0 - b0 : i1 - b0] = torch.sigmoid(self._logits(rep, stacks))[:, 0]
            advance(i1 - i0)
        return out

    @torch.inference_mode()
    def estimate(self, shapes: dict[str, tuple[int, int, int]], repeats: int = 2) -> list[dict]:
        """Seconds to predict volumes of ``shapes`` (name -> (Z, H, W)), from timed batches on this device.

        For each volume and view, the random slices of one forward (``slices_per_forward``) of the view's shape go through the
        whole ensemble (windows, test-time augmentation, blending) once to warm up and ``repeats`` times
        timed; the time per slice times the view's slice count, divided over the devices, is the view's
        estimate. Reading and writing overlap with the device (``pipeline``) and are not counted.
        """
        rep, rows = self.replicas[0], []
        channels = sorted({m.in_channels for m in self.members})
        for name, shape in shapes.items():
            for view in self.views:
                n, h, w = (shape[a] for a in VIEW_AXES[view])
                b = min(self.slices_per_forward((h, w)), n)  # the slices of one forward, as predict_view runs them
                stacks = {c: torch.rand((b, c, h, w), device=rep.device) for c in channels}
                self._logits(rep, stacks)  # warm-up (cudnn.benchmark, compile)
                sync = torch.cuda.synchronize if rep.device.type == "cuda" else (lambda: None)
                sync()
                t0 = time.perf_counter()
                for _ in range(repeats):
                    self._logits(rep, stacks)
                sync()
                per_slice = (time.perf_counter() - t0) / (repeats * b)
                rows.append({"volume": name, "view": view, "slices": n, "slice_shape": (h, w),
                             "s_per_slice": per_slice, "seconds": per_slice * n / len(self.replicas)})
        return rows

    def view_maps(self, volume: Volume, work: Path | None = None, name: str = "", resume: bool = False) -> list[np.ndarray]:
        """One float16 probability map per view, in the view's orientation (``<work>/<view>.npy``
        memory maps, or arrays in RAM without ``work``). With ``resume``, a map whose progress file
        ``<view>.next`` says where it stopped continues from there (blocks are overwritten, never added)."""
        maps = []
        for view in self.views:
            shape = self.view_shape(volume, view)
            if work is None:
                prob, done = np.zeros(shape, dtype=np.float16), None
                start = 0
            else:
                path, done = work / f"{view}.npy", work / f"{view}.next"
                if resume and path.exists() and done.exists():
                    prob, start = np.load(path, mmap_mode="r+"), int(done.read_text())
                else:
                    prob, start = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape), 0

            finished: dict[int, int] = {}  # blocks written beyond the contiguous prefix (several devices)
            state = {"next": start}
            lock = threading.Lock()

            def write(b0, b1, probs, prob=prob, done=done, finished=finished, state=state, lock=lock):
                prob[b0:b1] = probs
                if done is None:
                    return
                with lock:
                    finished[b0] = b1
                    while state["next"] in finished:  # the progress file: every slice before it is written
                        state["next"] = finished.pop(state["next"])
                    flush_rows(prob, b0, b1)
                    release_pages(prob, (b0, b1))
                    write_text_atomic(done, str(state["next"]))

            if start < shape[0]:
                self.predict_view(volume, view, write, start=start, name=name)
            maps.append(prob)
        return maps

    def combine(self, maps: list[np.ndarray], z0: int, z1: int) -> np.ndarray:
        """Mean over views of slices z0..z1-1, in the volume's orientation (float32)."""
        total = None
        for view, prob in zip(self.views, maps):
            back = tuple(int(a) for a in np.argsort(VIEW_AXES[view]))  # view orientation -> volume orientation
            part = torch.from_numpy(read_view_block(prob, back, z0, min(z1, prob.shape[back[0]])))
            total = part.float() if total is None else total.add_(part)  # float16 -> float32 (torch's is vectorised)
        return total.div_(len(maps)).numpy()

    def predict(self, volume: Volume, out: str | Path | None = None, name: str = "") -> np.ndarray:
        """Probability volume (float16, shape of ``volume``): mean over views of the ensemble's sigmoid.

        With ``out`` a path, every intermediate is a memory map in a work folder beside it and the
        result is written under a temporary name and renamed when complete, so the resident memory
        stays a few blocks whatever the volume's size.
        """
        if out is None:
            maps = self.view_maps(volume, name=name)
            result = np.empty(volume.shape, dtype=np.float16)
            result[:] = self.combine(maps, 0, volume.shape[0])
            return result
        out = Path(out)
        work = out.with_name(f".{out.stem}.work-{os.getpid()}")
        work.mkdir(parents=True, exist_ok=True)
        try:
            maps = self.view_maps(volume, work, name=name)
            if list(self.views) == ["z"]:  # one view in the volume's orientation: its map is the result
                del maps
                os.replace(work / "z.npy", out)
                return np.load(out, mmap_mode="r")
            with atomic_output(out) as tmp:
                result = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=volume.shape)
                step = max(1, self.block_bytes // (4 * volume.shape[1] * volume.shape[2]))
                for z0 in range(0, volume.shape[0], step):
                    result[z0 : z0 + step] = self.combine(maps, z0, z0 + step)
                    flush_rows(result, z0, min(z0 + step, volume.shape[0]))
                    release_pages(result, (z0, min(z0 + step, volume.shape[0])))
                del result, maps
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return np.load(out, mmap_mode="r")
