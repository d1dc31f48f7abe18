"""The global intensity-threshold baseline: the best single threshold on the normalised image.

For a validation volume, every threshold of a grid is applied to the whole normalised volume and
scored with surface Dice; the best is what a model has to beat. The threshold is tuned on the very
volume it is scored on, so this is an optimistic baseline.
"""

from __future__ import annotations

import numpy as np

from src.data.volumes import Volume
from src.metrics.surface_dice import SurfaceDiceAccumulator

DEFAULT_GRID = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


def threshold_baseline(
    image: Volume, truth, truth_threshold: float = 0, grid=DEFAULT_GRID, chunk: int = 16
) -> dict[float, float]:
    """Surface Dice of ``normalised(image) > t`` against ``truth > truth_threshold`` for each t of
    ``grid``; ``truth`` is a (Z, H, W) array or memory map (a label volume's ``data`` with 127)."""
    accs = {float(t): SurfaceDiceAccumulator() for t in grid}
    for z in range(0, len(image), chunk):
        norm = image.normalise(image.data[z : z + chunk])
        truth_chunk = np.asarray(truth[z : z + chunk]) > truth_threshold
        for t, acc in accs.items():
            acc.update(norm > t, truth_chunk)
    return {t: acc.score() for t, acc in accs.items()}


def best_threshold(scores: dict[float, float]) -> tuple[float, float]:
    """(threshold, score) of the best entry, NaN scores ignored."""
    valid = {t: s for t, s in scores.items() if s == s}
    t = max(valid, key=valid.get)
    return t, valid[t]
