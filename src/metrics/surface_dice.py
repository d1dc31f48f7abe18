"""Surface Dice at tolerance 0, the competition metric, streamed over consecutive slice pairs.

Definition (DeepMind's ``surface-distance``, voxel spacing 1): every 2x2x2 cube of the zero-padded
volume gets an 8-bit neighbour code; its surface area comes from the marching-cubes table (taken
from MONAI, which adapted DeepMind's). At tolerance 0 a cube counts where prediction and truth both
have surface in it; the score is ``sum(area_pred + area_true over such cubes) / sum(area_pred + area_true)``.
Empty prediction and empty truth give NaN (0/0).

Instead of summing float areas, :class:`SurfaceDiceAccumulator` counts the joint histogram of
(prediction code, truth code) over cubes, a 256 x 256 integer table. The score follows exactly from
it, chunks can be processed in any grouping, and histograms from several processes add up without
rounding, so a distributed evaluation equals the single-process one. Memory is O(chunk of slices);
works on CPU or CUDA tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_TABLES: dict[str, torch.Tensor] = {}
N_CODES = 256


def area_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """Surface area (float64) of each of the 256 neighbour codes, DeepMind's bit order, spacing 1."""
    key = str(device)
    if key not in _TABLES:
        from monai.metrics.utils import create_table_neighbour_code_to_surface_area

        table, _ = create_table_neighbour_code_to_surface_area((1.0, 1.0, 1.0))
        _TABLES[key] = torch.as_tensor(table, dtype=torch.float64).to(device)
    return _TABLES[key]


def _as_binary(x, device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return (t.to(device) != 0).to(torch.uint8)


def slice_codes(slices: torch.Tensor) -> torch.Tensor:
    """4-bit code of every 2x2 square of each zero-padded slice: (k, H, W) -> (k, H+1, W+1), uint8.

    Bits: 8 top-left, 4 top-right, 2 bottom-left, 1 bottom-right. A cube's 8-bit code is the earlier
    slice's square code shifted by 4 OR the later one's (DeepMind's kernel: 128, 64, 32, 16 on the
    earlier slice, 8, 4, 2, 1 on the later), so each slice is coded once, not twice.
    """
    p = F.pad(slices, (1, 1, 1, 1))
    return (p[:, :-1, :-1] << 3) | (p[:, :-1, 1:] << 2) | (p[:, 1:, :-1] << 1) | p[:, 1:, 1:]


class SurfaceDiceAccumulator:
    """Streams a (prediction, truth) volume pair slice chunk by slice chunk.

    ``update`` takes consecutive chunks of shape (k, H, W) (or single slices (H, W)); ``score``
    closes the volume with the zero padding after the last slice and returns the surface Dice.
    ``hist`` is the integer joint histogram of (prediction code, truth code); ``merge`` adds another
    accumulator's histogram (e.g. a slice range processed elsewhere, whose own boundary slices were
    handled with ``start_pred``/``start_true``).
    """

    def __init__(self, device: torch.device | str = "cpu", start_pred=None, start_true=None):
        self.device = torch.device(device)
        self.hist = torch.zeros(N_CODES * N_CODES, dtype=torch.int64, device=self.device)
        # square codes of the slice before the next update (None: zero padding before the volume)
        self._prev_pred = self._prev_true = None
        self._closed = False
        if start_pred is not None:
            self.set_start(start_pred, start_true)

    def set_start(self, pred, true) -> None:
        """Declare the slice just before the first one to come (instead of the zero padding)."""
        if self._prev_pred is not None:
            raise RuntimeError("set_start() must come before the first update()")
        self._prev_pred = slice_codes(_as_binary(pred, self.device)[None])
        self._prev_true = slice_codes(_as_binary(true, self.device)[None])

    def update(self, pred, true) -> None:
        if self._closed:
            raise RuntimeError("accumulator already closed by score()/close()")
        pred, true = _as_binary(pred, self.device), _as_binary(true, self.device)
        if pred.ndim == 2:
            pred, true = pred[None], true[None]
        if pred.shape != true.shape:
            raise ValueError(f"prediction chunk {tuple(pred.shape)} and truth chunk {tuple(true.shape)} differ")
        code_pred, code_true = slice_codes(pred), slice_codes(true)
        if self._prev_pred is None:
            self._prev_pred = torch.zeros_like(code_pred[:1])
            self._prev_true = torch.zeros_like(code_true[:1])
        elif self._prev_pred.shape[1:] != code_pred.shape[1:]:
            raise ValueError(f"slice shape changed from {tuple(pred.shape[1:])} to a different one mid-volume")
        self._count(torch.cat([self._prev_pred, code_pred]), torch.cat([self._prev_true, code_true]))
        self._prev_pred, self._prev_true = code_pred[-1:], code_true[-1:]

    def close(self) -> None:
        """Add the cubes between the last slice and the zero padding after it (once)."""
        if not self._closed and self._prev_pred is not None:
            zeros = torch.zeros_like(self._prev_pred)
            self._count(torch.cat([self._prev_pred, zeros]), torch.cat([self._prev_true, zeros]))
        self._closed = True

    def merge(self, other: SurfaceDiceAccumulator) -> None:
        self.hist += other.hist.to(self.device)

    def score(self) -> float:
        self.close()
        return score_from_histogram(self.hist)

    def _count(self, pred_squares: torch.Tensor, true_squares: torch.Tensor) -> None:
        """Add the cubes between consecutive square-code slices (k+1, H+1, W+1) to the histogram."""
        pred = ((pred_squares[:-1] << 4) | pred_squares[1:]).to(torch.int32)
        true = ((true_squares[:-1] << 4) | true_squares[1:]).to(torch.int32)
        self.hist += torch.bincount((pred * N_CODES + true).view(-1), minlength=N_CODES * N_CODES)


def score_from_histogram(hist: torch.Tensor) -> float:
    """Surface Dice at tolerance 0 from a joint (prediction code, truth code) histogram."""
    h = hist.to(torch.float64).view(N_CODES, N_CODES)
    area = area_table(h.device)
    area_pred = h.sum(1) @ area
    area_true = h.sum(0) @ area
    both = (area[:, None] > 0) & (area[None, :] > 0)
    overlap = (h * both * (area[:, None] + area[None, :])).sum()
    total = float(area_pred + area_true)
    if total == 0.0:
        return math.nan
    return float(overlap) / total


def surface_dice(pred, true, chunk: int = 32, device: torch.device | str | None = None) -> float:
    """Surface Dice at tolerance 0 of two (Z, H, W) volumes (numpy, memmap or torch; non-zero = vessel)."""
    if tuple(pred.shape) != tuple(true.shape) or len(pred.shape) != 3:
        raise ValueError(f"expected two 3-D volumes of the same shape, got {tuple(pred.shape)} and {tuple(true.shape)}")
    if device is None:
        device = pred.device if isinstance(pred, torch.Tensor) else "cpu"
    acc = SurfaceDiceAccumulator(device)
    for z in range(0, pred.shape[0], chunk):
        acc.update(pred[z : z + chunk], true[z : z + chunk])
    return acc.score()
