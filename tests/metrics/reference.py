"""DeepMind's surface-distance library as the reference implementation (tests and benchmarks only)."""

import numpy as np

if not hasattr(np, "Inf"):  # surface-distance 0.1 still spells numpy's infinity the pre-2.0 way
    np.Inf = np.inf

import surface_distance  # noqa: E402


def reference_surface_dice(pred: np.ndarray, true: np.ndarray) -> float:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 for two empty masks -> NaN
        distances = surface_distance.compute_surface_distances(
            np.asarray(true, bool), np.asarray(pred, bool), (1.0, 1.0, 1.0)
        )
        return float(surface_distance.compute_surface_dice_at_tolerance(distances, 0.0))
