"""Where a model's errors on a phantom test kidney cost surface Dice, and which ones are worth fixing.

``python -m benchmarks.errors --probabilities P.npy --kidney kidney_5 [--seed 0 --size small --style A]
[--threshold 0.5]`` re-renders the kidney's truth (:func:`src.data.phantom.render.kidney_scene`, the same
scene the phantom wrote) with the radius of the vessel piece behind every vessel voxel, thresholds the
model's probabilities (``keep_probabilities=true`` of ``src.predict``), and prints:

- the truth's vessel voxels and the model's recall per vessel radius (in voxels);
- the called voxels by where they fall: on a vessel, within 2 voxels of one (a boundary off by a voxel or
  two), in the cortex rim, elsewhere in the organ or outside it;
- surface Dice at tolerance 0 as predicted, and with one kind of error repaired at a time (far false
  positives removed, thin or thick vessels added, vessels missed outright added, the surface made exact
  where the model called near it): the repair that gains most is where the model loses its score.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from src.data.phantom.geometry import grid_axes, organ_level
from src.data.phantom.render import kidney_scene, render_capsules
from src.metrics.surface_dice import surface_dice

RADIUS_BINS = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, np.inf)  # vessel radius in voxels


def truth_and_radius(kidney: str, seed: int, size: str, style: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, radius in voxels of the piece behind each vessel voxel (0 outside), organ level)."""
    scene = kidney_scene(kidney, seed, size, style=style)
    _, key = render_capsules(scene.tree, scene.keys, scene.shape, scene.voxel_mm, scene.style)
    radius_of_key = np.zeros(int(scene.keys.max()) + 1, dtype=np.float32)
    radius_of_key[scene.keys] = (scene.tree.radius_start + scene.tree.radius_end) / 2 / scene.voxel_mm
    z, y, x = grid_axes(scene.shape, scene.voxel_mm)
    return key > 0, radius_of_key[key], organ_level(scene.geometry, z, y, x).astype(np.float32)


def analyse(called: np.ndarray, truth: np.ndarray, radius: np.ndarray, level: np.ndarray) -> dict:
    near = ndimage.binary_dilation(truth, iterations=2)
    out = {"truth_share": float(truth.mean()), "called_share": float(called.mean()), "recall_by_radius": []}
    for lo, hi in zip(RADIUS_BINS[:-1], RADIUS_BINS[1:]):
        in_bin = truth & (radius >= lo) & (radius < hi)
        n = int(in_bin.sum())
        out["recall_by_radius"].append((lo, hi, n, float(called[in_bin].mean()) if n else float("nan")))
    false = called & ~truth
    regions = {"within 2 voxels of a vessel": false & near, "cortex rim (level > 0.72)": false & ~near & (level > 0.72) & (level < 1),
               "elsewhere in the organ": false & ~near & (level <= 0.72), "outside the organ": false & ~near & (level >= 1)}
    out["false_positives"] = {name: int(mask.sum()) for name, mask in regions.items()}
    out["called_voxels"] = int(called.sum())
    thin = truth & (radius < 1.5)
    calls_near = ndimage.binary_dilation(called, iterations=2)
    band = ndimage.binary_dilation(truth) & ~ndimage.binary_erosion(truth)  # a voxel either side of the surface
    boundary_fixed = np.where(band & calls_near, truth, called)
    repairs = {
        "as predicted": called,
        "far false positives removed (> 2 voxels from a vessel)": called & near,
        "missed thin vessels added (radius < 1.5 voxels)": called | thin,
        "missed thick vessels added (radius >= 1.5 voxels)": called | (truth & ~thin),
        "vessels missed outright added (> 2 voxels from any call)": called | (truth & ~calls_near),
        "surface exact where the model called near it (one voxel either side)": boundary_fixed,
        "surface exact and far false positives removed": boundary_fixed & (near | truth),
    }
    out["surface_dice"] = {name: float(surface_dice(mask, truth)) for name, mask in repairs.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probabilities", required=True,
                        help="a kidney's probabilities (.npy, Z x H x W) from src.predict keep_probabilities=true")
    parser.add_argument("--kidney", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="small")
    parser.add_argument("--style", default="A")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    probs = np.load(args.probabilities, mmap_mode="r")
    truth, radius, level = truth_and_radius(args.kidney, args.seed, args.size, args.style)
    if probs.shape != truth.shape:
        raise SystemExit(f"probabilities {probs.shape} do not match {args.kidney}'s shape {truth.shape} "
                         f"(seed {args.seed}, size {args.size})")
    result = analyse(np.asarray(probs) > args.threshold, truth, radius, level)
    print(f"{args.kidney} (style {args.style}, seed {args.seed}): truth {result['truth_share']:.2%} of voxels, "
          f"called {result['called_share']:.2%}")
    print("recall by vessel radius (voxels):")
    for lo, hi, n, recall in result["recall_by_radius"]:
        print(f"  [{lo:g}, {hi:g})  {n:>8} voxels  recall {recall:.3f}")
    print(f"false positives ({sum(result['false_positives'].values())} of {result['called_voxels']} called voxels):")
    for name, n in result["false_positives"].items():
        print(f"  {name:<32} {n:>8}")
    print("surface Dice at tolerance 0:")
    for name, value in result["surface_dice"].items():
        print(f"  {value:.4f}  {name}")


if __name__ == "__main__":
    main()
