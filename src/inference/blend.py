"""The submitted 2-D + 3-D blend, and a plain weighted average.

``roi`` (the 4th place's Kaggle notebook), per slice: the mask ``p2d > hull_threshold``, its edges
(Canny), the convex hull of all their contours, filled and dilated (5x5 kernel, 5 iterations) is a
region of interest; the final mask is ``(roi * p3d + p2d) > threshold`` (0.55), and ``p2d > hull_threshold``
where the slice has no contour. ``average``: ``(w2d * p2d + w3d * p3d) / (w2d + w3d) > threshold``.

:func:`blend_score_slice` gives the quantity each mode thresholds, as one score per voxel (``score >
threshold`` is exactly the blend's mask; a slice without contour is shifted so that ``p2d >
hull_threshold`` reads the same), so post-processing (top-fraction thresholds, calibration) can treat
the blend like a probability volume with values in ``SCORE_RANGE``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from src.utils.options import look_up


def roi_mask(p2d_slice: np.ndarray, hull_threshold: float = 0.05, kernel: int = 5, iterations: int = 5) -> np.ndarray | None:
    """The dilated filled convex hull of the 2-D mask's contours (uint8 0/1), None without contours."""
    binary = (np.asarray(p2d_slice) > hull_threshold).astype(np.uint8) * 255
    edges = cv2.Canny(binary, 100, 200)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(np.concatenate(contours))
    region = np.zeros(binary.shape, np.uint8)
    cv2.fillPoly(region, [hull], 1)
    return cv2.dilate(region, np.ones((kernel, kernel), np.uint8), iterations=iterations)


def _roi_score(p2d: np.ndarray, p3d: np.ndarray, threshold: float, hull_threshold: float, kernel: int, iterations: int,
               **_) -> np.ndarray:
    region = roi_mask(p2d, hull_threshold, kernel, iterations)
    if region is None:
        return p2d + np.float32(threshold - hull_threshold)
    return region * p3d + p2d


def _average_score(p2d: np.ndarray, p3d: np.ndarray, weight_2d: float, weight_3d: float, **_) -> np.ndarray:
    return (weight_2d * p2d + weight_3d * p3d) / (weight_2d + weight_3d)


@dataclass(frozen=True)
class BlendMode:
    """One way of blending a slice's 2-D and 3-D probabilities into a score thresholded like a probability."""

    score: Callable[..., np.ndarray]  # (p2d, p3d, **blend settings) -> float32 score of a slice
    value_range: tuple[float, float]  # the range of that score


BLEND_MODES = {"roi": BlendMode(_roi_score, (0.0, 2.0)), "average": BlendMode(_average_score, (0.0, 1.0))}


def blend_mode(mode: str) -> BlendMode:
    return look_up(mode, BLEND_MODES, "blend.mode")


def blend_score_slice(p2d: np.ndarray, p3d: np.ndarray, mode: str = "roi", threshold: float = 0.55, hull_threshold: float = 0.05,
                      kernel: int = 5, iterations: int = 5, weight_2d: float = 1.0, weight_3d: float = 1.0) -> np.ndarray:
    """Float32 score of one slice; the blend's mask is ``score > threshold``."""
    return blend_mode(mode).score(np.asarray(p2d, dtype=np.float32), np.asarray(p3d, dtype=np.float32), threshold=threshold,
                                  hull_threshold=hull_threshold, kernel=kernel, iterations=iterations, weight_2d=weight_2d,
                                  weight_3d=weight_3d)
