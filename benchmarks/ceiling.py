"""What tolerance 0 leaves of the phantom's vessels at each step of its imaging, before any model.

``python -m benchmarks.ceiling [--size small] [--seed 0] [--styles A B] [--kidneys kidney_5 kidney_6]``
renders each test kidney as :func:`src.data.phantom.render_kidney` does and scores, with surface Dice at
tolerance 0 against the truth, the best global threshold of images that keep more and more of the
acquisition (:mod:`src.data.phantom.acquisition`):

1. ``occupancy``: the share of each voxel inside a vessel (every vessel at full contrast, no optics);
   the truth is "the voxel's centre is inside", so this is what partial volume alone costs;
2. ``+ PSF``: the same through the style's point-spread function;
3. ``+ thin-vessel contrast``: the vessels as the image carries them (thin ones fainter), no tissue;
4. ``object without noise``: tissue, cortex, blobs, gain, shading, rings and optics, noise switched off;
5. ``image as written``: with the style's Poisson-Gaussian noise (the demo's threshold baseline);
6. ``white top-hat``: the image as written minus its grey opening (a box of ``--tophat`` voxels), a classic
   non-learned reader that removes what is wider than a vessel (cortex, shading) before thresholding.

A global threshold is only one reader of these images (a network also uses shape and context), so the
rows are not bounds on what a model can score; they say where the phantom's difficulty comes from.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from scipy import ndimage

from src.data.phantom.acquisition import acquire, integrate_voxels
from src.data.phantom.render import kidney_scene, render_capsules, render_tissue
from src.metrics.baseline import best_threshold
from src.metrics.surface_dice import surface_dice

FRACTIONS = np.geomspace(0.002, 0.2, 28)  # shares of voxels called vessel: the threshold grid of every row


def best_global_threshold(image: np.ndarray, truth: np.ndarray, fractions=FRACTIONS) -> tuple[float, float]:
    """(share of voxels called, surface Dice) of the best threshold of ``image`` among those calling
    ``fractions`` of the voxels (steps of 18 %), refined once around the best (steps of 4 %)."""
    ordered = np.sort(image, axis=None)  # once: every threshold is a quantile of it

    def score(fraction: float) -> float:
        return surface_dice(image >= ordered[ordered.size - max(int(fraction * ordered.size), 1)], truth)

    scores = {float(f): score(f) for f in fractions}
    best, _ = best_threshold(scores)
    for f in np.geomspace(best / 1.18, best * 1.18, 9):
        scores.setdefault(float(f), score(float(f)))
    return best_threshold(scores)


def rows_of(name: str, seed: int, size: str, style: str, tophat: int = 9) -> list[tuple[str, float, float]]:
    scene = kidney_scene(name, seed, size, style=style)
    style_ = scene.style
    _, key = render_capsules(scene.tree, scene.keys, scene.shape, scene.voxel_mm, style_)
    truth = key > 0
    fine_shape, fine_mm = scene.fine
    k = int(style_.oversample)
    flat_contrast = dataclasses.replace(style_, vessel_contrast=1.0, vessel_half_radius_mm=0.0)
    occupancy = integrate_voxels(render_capsules(scene.tree, scene.keys, fine_shape, fine_mm, flat_contrast)[0], k)
    images = {"occupancy (partial volume alone)": occupancy,
              "+ PSF": ndimage.gaussian_filter(occupancy, style_.psf_voxels)}
    signal = render_capsules(scene.tree, scene.keys, fine_shape, fine_mm, style_)[0]
    images["+ thin-vessel contrast (no tissue)"] = ndimage.gaussian_filter(integrate_voxels(np.abs(signal), k), style_.psf_voxels)
    obj = render_tissue(scene.geometry, fine_shape, fine_mm, scene.rngs["texture"], scene.rngs["blob"], style_)
    obj += signal
    del signal
    sign = 1.0 if style_.vessel_contrast >= 0 else -1.0
    noiseless = dataclasses.replace(style_, dose=1e12, read_noise=0.0)
    state = scene.rngs["acquisition"].bit_generator.state
    images["object without noise"] = sign * acquire(obj, noiseless, scene.voxel_um, scene.rngs["acquisition"])
    scene.rngs["acquisition"].bit_generator.state = state  # the same gain, shading and rings, now with noise
    images["image as written (with noise)"] = sign * acquire(obj, style_, scene.voxel_um, scene.rngs["acquisition"])
    images[f"white top-hat ({tophat} voxels) of the image"] = ndimage.white_tophat(images["image as written (with noise)"], size=tophat)
    out = []
    for label, image in images.items():
        fraction, value = best_global_threshold(image, truth)
        out.append((label, fraction, value))
    out.append(("truth share of voxels", float(truth.mean()), float("nan")))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--styles", nargs="+", default=["A", "B"])
    parser.add_argument("--kidneys", nargs="+", default=["kidney_5", "kidney_6"])
    parser.add_argument("--tophat", type=int, default=9, help="box of the white top-hat row [voxels]")
    args = parser.parse_args(argv)
    print(f"best global threshold, surface Dice at tolerance 0 (phantom {args.size}, seed {args.seed}; "
          f"in brackets the share of voxels it calls)")
    for style in args.styles:
        for name in args.kidneys:
            t0 = time.perf_counter()
            rows = rows_of(name, args.seed, args.size, style, args.tophat)
            print(f"\nstyle {style} {name} ({time.perf_counter() - t0:.0f} s)")
            for label, fraction, value in rows:
                if value != value:
                    print(f"  {label:<40} {fraction:7.2%}")
                else:
                    print(f"  {label:<40} {value:.4f}  ({fraction:.2%})")


if __name__ == "__main__":
    main()
