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
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from src.data.registry import VIEW_AXES
from src.data.volumes import Volume, read_view_block, release_pages
from src.inference.checkpoints import Member
from src.inference.tta import with_tta
from src.utils.errors import UserError
from src.utils.progress import track

VIEWS = ("z", "xz", "zy")


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
    from monai.utils import ensure_tuple_rep

    if roi_size is not None:
        roi, what = roi_size, "engine.roi_size"
    else:
        roi, what = member.roi_size or DEFAULT_ROI, f"{member.name}: the recorded val_window.roi_size"
    try:
        out = tuple(int(r) for r in ensure_tuple_rep(roi, 2))
    except (ValueError, TypeError):
        raise UserError(f"{what} must be an int or a list of 2 ints, got {roi!r}") from None
    if min(out) < 1:
        raise UserError(f"{what} must be positive, got {roi!r}")
    return out  # type: ignore[return-value]


@dataclass
class InferenceEngine:
    """Sliding-window 2.5-D inference of a weighted ensemble over one or more views of a volume."""

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
    _device: torch.device = field(init=False, repr=False)

    def __post_init__(self):
        if not self.members:
            raise UserError("the inference engine needs at least one model")
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown:
            raise UserError(f"unknown view(s) {unknown}; choose from {', '.join(VIEWS)}")
        self._device = resolve_device(self.device)
        for m in self.members:
            m.net.to(self._device).eval()
        self.rois = [window_of(self.roi_size, m) for m in self.members]
        self.total_weight = float(sum(m.weight for m in self.members))
        if self.total_weight <= 0:
            raise UserError("ensemble weights must sum to a positive number")

    # ------------------------------------------------------------------ one batch of slices
    def _sliding_window(self, net: torch.nn.Module, x: torch.Tensor, roi: tuple[int, int]) -> torch.Tensor:
        x, (top, bottom, left, right) = reflect_pad_to(x, roi)
        y = sliding_window_inference(
            x, roi_size=roi, sw_batch_size=self.sw_batch_size, predictor=net, overlap=self.overlap,
            mode=self.mode, padding_mode=self.padding_mode, progress=False,
        )
        return y[..., top : y.shape[-2] - bottom, left : y.shape[-1] - right]

    @torch.no_grad()
    def logits(self, stacks: dict[int, torch.Tensor]) -> torch.Tensor:
        """Weighted mean of the members' logits for (B, C, H, W) stacks keyed by channel count."""
        total = None
        autocast = self.amp and self._device.type == "cuda"
        for m, roi in zip(self.members, self.rois):
            x = stacks[m.in_channels].to(self._device, non_blocking=True)
            with torch.autocast(device_type=self._device.type, dtype=torch.float16, enabled=autocast):
                y = with_tta(lambda t, net=m.net, roi=roi: self._sliding_window(net, t, roi), x, m.tta).float()
            total = m.weight * y if total is None else total + m.weight * y
        return total / self.total_weight

    # ------------------------------------------------------------------ a view of a volume
    def view_shape(self, volume: Volume, view: str) -> tuple[int, int, int]:
        return tuple(volume.shape[a] for a in VIEW_AXES[view])  # type: ignore[return-value]

    def predict_view(self, volume: Volume, view: str, write: Callable[[int, int, np.ndarray], None], start: int = 0,
                     name: str = "") -> None:
        """Predict every slice of ``view`` from slice ``start`` on, in the view's orientation.

        The volume is read a block of slices at a time (about ``block_bytes`` of float32, read once
        and transposed into contiguous memory: a strided view of a large memory map is read in few
        passes), predicted ``slices_per_batch`` at a time, and handed to ``write(b0, b1, probs)`` as
        float32 probabilities of slices b0..b1-1, so the caller writes contiguous blocks.
        """
        order = VIEW_AXES[view]
        n, height, width = self.view_shape(volume, view)
        channels = sorted({m.in_channels for m in self.members})
        r = max(channels) // 2
        per_slice = height * width * 4
        block = max(1, self.block_bytes // per_slice // self.slices_per_batch) * self.slices_per_batch
        blocks = [(b0, min(n, b0 + block)) for b0 in range(start, n, block)]
        batches = [(b0, b1, i0, min(b1, i0 + self.slices_per_batch)) for b0, b1 in blocks for i0 in range(b0, b1, self.slices_per_batch)]
        slab = out = None
        for b0, b1, i0, i1 in track(batches, len(batches), f"{name} {view}".strip(), self.progress):
            if i0 == b0:  # a new block: read it with its neighbour margins
                lo, hi = max(0, b0 - r), min(n, b1 + r)
                slab = volume.normalise(read_view_block(volume.data, order, lo, hi))
                out = np.empty((b1 - b0, height, width), dtype=np.float32)
            stacks = {}
            for c in channels:
                rc = c // 2
                stack = np.zeros((i1 - i0, c, height, width), dtype=np.float32)
                for k in range(c):
                    src = np.arange(i0, i1) + k - rc
                    ok = (src >= 0) & (src < n)
                    stack[ok, k] = slab[src[ok] - lo]
                stacks[c] = torch.from_numpy(stack)
            out[i0 - b0 : i1 - b0] = torch.sigmoid(self.logits(stacks))[:, 0].cpu().numpy()
            if i1 == b1:
                write(b0, b1, out)

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

            def write(b0, b1, probs, prob=prob, done=done):
                prob[b0:b1] = probs
                if done is not None:
                    prob.flush()
                    release_pages(prob)
                    tmp = done.with_name(done.name + ".tmp")
                    tmp.write_text(str(b1))
                    os.replace(tmp, done)

            if start < shape[0]:
                self.predict_view(volume, view, write, start=start, name=name)
            maps.append(prob)
        return maps

    def combine(self, maps: list[np.ndarray], z0: int, z1: int) -> np.ndarray:
        """Mean over views of slices z0..z1-1, in the volume's orientation (float32)."""
        total = None
        for view, prob in zip(self.views, maps):
            back = tuple(int(a) for a in np.argsort(VIEW_AXES[view]))  # view orientation -> volume orientation
            part = read_view_block(prob, back, z0, min(z1, prob.shape[back[0]])).astype(np.float32)
            total = part if total is None else total + part
        return total / len(maps)

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
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        try:
            maps = self.view_maps(volume, work, name=name)
            result = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=volume.shape)
            step = max(1, self.block_bytes // (4 * volume.shape[1] * volume.shape[2]))
            for z0 in range(0, volume.shape[0], step):
                result[z0 : z0 + step] = self.combine(maps, z0, z0 + step)
                result.flush()
                release_pages(result)
            del result, maps
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
        return np.load(out, mmap_mode="r")
