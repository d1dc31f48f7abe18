"""A PNG to look at a prediction: the middle slice of each view with truth and prediction overlaid."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from src.data.registry import VIEW_AXES
from src.data.volumes import Volume


def _tile(grey: np.ndarray, truth: np.ndarray | None, pred: np.ndarray) -> np.ndarray:
    """[image | truth in red | prediction in green], uint8 BGR."""
    base = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)
    panels = [base]
    for mask, channel in ((truth, 2), (pred, 1)):
        panel = base.copy()
        if mask is not None:
            panel[mask, channel] = 255
        panels.append(panel)
    return np.concatenate(panels, axis=1)


def write_preview(image: Volume, pred: np.ndarray, path: Path, truth: np.ndarray | None = None) -> Path:
    """One row per view (z, xz, zy): image, truth (red), prediction (green) of its middle slice."""
    rows = []
    for order in VIEW_AXES.values():
        i = image.shape[order[0]] // 2
        grey = image.normalise(np.asarray(image.data).transpose(order)[i])
        t = None if truth is None else np.asarray(truth).transpose(order)[i] > 0
        rows.append(_tile(grey, t, np.asarray(pred).transpose(order)[i] > 0))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))
    return path
