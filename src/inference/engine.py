"""The inference engine: a volume and a weighted ensemble of 2.5-D models -> a probability volume.

For each requested view (``z``: the volume's own slices, ``xz`` and ``zy``: the recipe's
projections, ``v.transpose(1, 2, 0)`` and ``v.transpose(2, 0, 1)``, so each model sees slices in the
orientation it was trained on), the volume is read in slabs of consecutive slices from its memory
map, normalised with the volume's statistics, stacked into each model's ``in_channels`` neighbours
(zeros beyond the ends), run through MONAI's sliding window with the member's test-time augmentation,
and the members' logits are averaged with their weights; the sigmoid of that is averaged over views.
The result accumulates in a float16 array, a memory map when ``out`` is a path, so a volume larger
than RAM works: resident memory is a few slabs whatever the volume's size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from src.data.registry import VIEW_AXES
from src.data.volumes import Volume, release_pages
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


@dataclass
class InferenceEngine:
    """Sliding-window 2.5-D inference of a weighted ensemble over one or more views of a volume."""

    members: Sequence[Member]
    roi_size: int | tuple[int, int] = 512
    overlap: float = 0.25
    mode: str = "gaussian"
    padding_mode: str = "reflect"
    sw_batch_size: int = 8
    slices_per_batch: int = 4
    views: Sequence[str] = VIEWS
    device: str | torch.device | None = "auto"
    amp: bool = True
    progress: bool = True
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
        roi = self.roi_size
        self.roi = (int(roi), int(roi)) if isinstance(roi, (int, np.integer)) else tuple(int(r) for r in roi)
        self.total_weight = float(sum(m.weight for m in self.members))
        if self.total_weight <= 0:
            raise UserError("ensemble weights must sum to a positive number")

    # ------------------------------------------------------------------ one batch of slices
    def _sliding_window(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        x, (top, bottom, left, right) = reflect_pad_to(x, self.roi)
        y = sliding_window_inference(
            x, roi_size=self.roi, sw_batch_size=self.sw_batch_size, predictor=net, overlap=self.overlap,
            mode=self.mode, padding_mode=self.padding_mode, progress=False,
        )
        return y[..., top : y.shape[-2] - bottom, left : y.shape[-1] - right]

    @torch.no_grad()
    def logits(self, stacks: dict[int, torch.Tensor]) -> torch.Tensor:
        """Weighted mean of the members' logits for (B, C, H, W) stacks keyed by channel count."""
        total = None
        autocast = self.amp and self._device.type == "cuda"
        for m in self.members:
            x = stacks[m.in_channels].to(self._device, non_blocking=True)
            with torch.autocast(device_type=self._device.type, dtype=torch.float16, enabled=autocast):
                y = with_tta(lambda t, net=m.net: self._sliding_window(net, t), x, m.tta).float()
            total = m.weight * y if total is None else total + m.weight * y
        return total / self.total_weight

    # ------------------------------------------------------------------ a view of a volume
    def predict_view(self, volume: Volume, view: str, write: Callable[[int, int, np.ndarray], None], start: int = 0,
                     name: str = "") -> None:
        """Predict every slice of ``view`` from slice ``start`` on; ``write(i0, i1, probs)`` receives
        float32 probabilities of slices i0..i1-1 in the view's orientation."""
        order = VIEW_AXES[view]
        axis = order[0]
        n = volume.shape[axis]
        channels = sorted({m.in_channels for m in self.members})
        r = max(channels) // 2
        batches = range(start, n, self.slices_per_batch)
        for i0 in track(batches, len(batches), f"{name} {view}".strip(), self.progress):
            i1 = min(n, i0 + self.slices_per_batch)
            lo, hi = max(0, i0 - r), min(n, i1 + r)
            index = [slice(None)] * 3
            index[axis] = slice(lo, hi)
            slab = volume.normalise(np.asarray(volume.data[tuple(index)]).transpose(order))
            release_pages(volume.data)
            stacks = {}
            for c in channels:
                rc = c // 2
                stack = np.zeros((i1 - i0, c, *slab.shape[1:]), dtype=np.float32)
                for k in range(c):
                    src = np.arange(i0, i1) + k - rc
                    ok = (src >= 0) & (src < n)
                    stack[ok, k] = slab[src[ok] - lo]
                stacks[c] = torch.from_numpy(stack)
            probs = torch.sigmoid(self.logits(stacks))[:, 0].cpu().numpy()
            write(i0, i1, probs)

    def predict(self, volume: Volume, out: str | Path | None = None, name: str = "") -> np.ndarray:
        """Probability volume (float16, shape of ``volume``): mean over views of the ensemble's sigmoid.

        With ``out`` a path, the result is a memory map written under a temporary name and renamed
        when complete.
        """
        shape = volume.shape
        tmp = None
        if out is None:
            result = np.zeros(shape, dtype=np.float16)
        else:
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
            result = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        share = 1.0 / len(self.views)
        try:
            for view in self.views:
                target = result.transpose(VIEW_AXES[view])

                def write(i0, i1, probs, target=target):
                    target[i0:i1] += (probs * share).astype(np.float16)
                    if isinstance(result, np.memmap):
                        result.flush()
                        release_pages(result)

                self.predict_view(volume, view, write, name=name)
            if tmp is not None:
                result.flush()
                del result
                os.replace(tmp, out)
                result = np.load(out, mmap_mode="r")
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()
        return result
