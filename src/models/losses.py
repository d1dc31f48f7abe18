"""Boundary DoU loss (Sun et al., arXiv 2308.00220) for 2-D and 3-D segmentation, vectorised.

With p = sigmoid(logits) and t the 0/1 target, per class and over the whole batch:
S = foreground voxels of t; C = foreground voxels with a background face-neighbour (4-neighbourhood
in 2-D, 6 in 3-D; outside the image counts as background); alpha = min(2 (1 - (C + s) / (S + s)) - 1, 0.8);
loss = (sum p^2 + sum t^2 - 2 sum pt + s) / (sum p^2 + sum t^2 - (1 + alpha) sum pt + s), s = 1e-5,
averaged over classes. Computed in float32 outside autocast, on the logits' device, with tensor
operations only (the original looped over the batch in Python and hard-coded CUDA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def boundary_voxels(target: torch.Tensor) -> torch.Tensor:
    """Foreground voxels of ``target`` (N, C, *spatial) that touch the background through a face."""
    fg = target > 0.5
    spatial = fg.ndim - 2
    padded = F.pad(fg, (1, 1) * spatial, value=False)
    interior = fg.clone()
    for axis in range(2, fg.ndim):
        interior &= _shifted(padded, axis, 0, fg.shape) & _shifted(padded, axis, 2, fg.shape)
    return fg & ~interior


def _shifted(padded: torch.Tensor, axis: int, start: int, shape: torch.Size) -> torch.Tensor:
    """The neighbours of every voxel along ``axis`` (start 0: previous, 2: next) from a 1-padded tensor."""
    index = [slice(None), slice(None)] + [slice(1, 1 + n) for n in shape[2:]]
    index[axis] = slice(start, start + shape[axis])
    return padded[tuple(index)]


class BoundaryDoULoss(nn.Module):
    """Boundary Difference-over-Union loss for logits (N, C, H, W) or (N, C, D, H, W) and 0/1 targets."""

    def __init__(self, smooth: float = 1e-5, alpha_max: float = 0.8):
        super().__init__()
        self.smooth = smooth
        self.alpha_max = alpha_max

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
        if logits.ndim not in (4, 5):
            raise ValueError(f"expected (N, C, H, W) or (N, C, D, H, W) inputs, got {logits.ndim} dimensions")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            p = torch.sigmoid(logits.float())
            t = target.float()
            dims = [0] + list(range(2, p.ndim))  # everything but the class axis
            s = self.smooth
            size = (t > 0.5).sum(dims).float()
            contour = boundary_voxels(t).sum(dims).float()
            alpha = 2.0 * (1.0 - (contour + s) / (size + s)) - 1.0
            alpha = torch.clamp(alpha, max=self.alpha_max)
            intersect = (p * t).sum(dims)
            y_sum = (t * t).sum(dims)
            z_sum = (p * p).sum(dims)
            loss = (z_sum + y_sum - 2 * intersect + s) / (z_sum + y_sum - (1 + alpha) * intersect + s)
            return loss.mean()


class BoundaryDoUBCELoss(nn.Module):
    """Boundary DoU plus ``bce_weight`` times the binary cross-entropy of the logits (not in the recipe).

    Boundary DoU, like Dice, scores the overlap of the whole batch; the cross-entropy term adds a pull
    of every voxel's probability towards its own label. The demo trains with it (with AdamW 3e-3); on
    its own, with RAdam, it did not make short runs learn faster (README, "Does a model carry over?").
    ``bce_weight=0`` is Boundary DoU alone.
    """

    def __init__(self, bce_weight: float = 1.0, smooth: float = 1e-5, alpha_max: float = 0.8):
        super().__init__()
        if bce_weight < 0:
            raise ValueError(f"bce_weight must be >= 0, got {bce_weight}")
        self.bce_weight = float(bce_weight)
        self.dou = BoundaryDoULoss(smooth, alpha_max)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.dou(logits, target)
        if self.bce_weight:
            with torch.autocast(device_type=logits.device.type, enabled=False):
                loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits.float(), target.float())
        return loss
