"""Pictures for TensorBoard: the centre input slice with target and prediction overlaid."""

from __future__ import annotations

import numpy as np
import torch


def overlay(images: torch.Tensor, targets: torch.Tensor, probs: torch.Tensor, max_items: int = 4) -> np.ndarray:
    """(H, W*n, 3) uint8: grey centre channel, target in red, prediction in green, side by side."""
    images = images.detach().float().cpu().numpy()
    targets = targets.detach().float().cpu().numpy()
    probs = probs.detach().float().cpu().numpy()
    tiles = []
    for i in range(min(images.shape[0], max_items)):
        grey = images[i, images.shape[1] // 2]
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        colour = np.zeros_like(rgb)
        colour[..., 0] = targets[i, 0]
        colour[..., 1] = probs[i, 0]
        tiles.append(np.clip(0.7 * rgb + 0.3 * colour, 0, 1))
    return (np.concatenate(tiles, axis=1) * 255).astype(np.uint8)
