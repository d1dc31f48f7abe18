"""3-D sliding-window inference (the stage-2 DynUNet): a volume -> a float16 probability volume.

The volume is processed in slabs of z-slices with a margin of half a window on each side (only the
slab's centre is kept), so memory is a few slabs whatever the volume's size; within a slab MONAI's
sliding window (roi, overlap, gaussian) runs with the member's test-time augmentation: ``none``,
``flip`` (identity and a flip of each axis, 4 views) or ``d4`` (the four quarter turns in the
slice plane, each also flipped along z, 8 views). Members' logits are averaged with their weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from src.data.volumes import Volume, release_pages
from src.inference.checkpoints import Member
from src.inference.engine import resolve_device
from src.inference.sliding import sliding_window
from src.inference.tta import tta_views, with_tta
from src.utils.errors import UserError
from src.utils.files import atomic_output
from src.utils.precision import autocast_dtype
from src.utils.progress import track
from src.utils.sizes import size_tuple


@dataclass
class Engine3D:
    """Sliding-window 3-D inference of a weighted ensemble of 3-D models (the module docstring).

    ``predict(volume)`` returns the float16 probability volume, or writes it as a memory map renamed
    into place at ``out``; ``slab`` bounds the z-slices held at a time, ``device="auto"`` picks CUDA
    when present, and ``amp`` runs the forwards in float16 on CUDA, bfloat16 on a CPU that has it
    (:func:`src.utils.precision.autocast_dtype`).
    """

    members: Sequence[Member]
    roi_size: int | tuple[int, int, int] = 256  # an int (a cube) or (d, h, w)
    overlap: float = 0.25
    mode: str = "gaussian"
    sw_batch_size: int = 1
    slab: int = 512  # z-slices predicted at a time (plus margins)
    device: str | torch.device | None = "auto"
    amp: bool = True
    progress: bool = True
    _device: torch.device = field(init=False, repr=False)

    def __post_init__(self):
        if not self.members:
            raise UserError("the 3-D engine needs at least one model")
        self._device = resolve_device(self.device)
        for m in self.members:
            tta_views(m.tta, 3, f"{m.name or 'a 3-D model'}: tta")  # an unknown mode fails here, before any work
            m.net.to(self._device).eval()
        self.total_weight = float(sum(m.weight for m in self.members))
        self.roi = size_tuple(self.roi_size, 3, "engine_3d.roi_size")

    @torch.no_grad()
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        roi = self.roi
        total = None
        dtype = autocast_dtype(self._device, self.amp)
        for m in self.members:
            def predict(v: torch.Tensor, net=m.net) -> torch.Tensor:
                with torch.autocast(device_type=self._device.type, dtype=dtype, enabled=dtype is not None):
                    return sliding_window(v, net, roi, self.sw_batch_size, self.overlap, self.mode, "constant",
                                          sw_device=self._device, device="cpu").float()

            y = with_tta(predict, x, m.tta, ndim=3, batched=False)
            total = m.weight * y if total is None else total + m.weight * y
        return total / self.total_weight

    def predict(self, volume: Volume, out: str | Path | None = None, name: str = "") -> np.ndarray:
        """Probability volume (float16, the volume's shape); a memory map renamed into place at ``out``."""
        depth = volume.shape[0]
        margin = self.roi[0] // 2
        if out is None:
            result = np.zeros(volume.shape, dtype=np.float16)
            self._predict_into(volume, result, depth, margin, name, flush=False)
            return result
        with atomic_output(out) as tmp:
            result = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=volume.shape)
            self._predict_into(volume, result, depth, margin, name, flush=True)
            del result
        return np.load(out, mmap_mode="r")

    def _predict_into(self, volume: Volume, result: np.ndarray, depth: int, margin: int, name: str, flush: bool) -> None:
        starts = range(0, depth, self.slab)
        for z0 in track(starts, len(starts), f"{name} 3d".strip(), self.progress):
            z1 = min(depth, z0 + self.slab)
            lo, hi = max(0, z0 - margin), min(depth, z1 + margin)
            x = torch.from_numpy(volume.normalise(volume.data[lo:hi]))[None, None].to(self._device)
            release_pages(volume.data)
            probs = torch.sigmoid(self._logits(x))[0, 0].numpy()
            result[z0:z1] = probs[z0 - lo : z1 - lo]
            if flush:
                result.flush()
                release_pages(result)
