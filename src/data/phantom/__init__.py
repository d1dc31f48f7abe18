"""Synthetic phantom of the competition data, in exactly the Kaggle folder layout.

``python -m src.data.phantom --out DIR [--seed N] [--size tiny|small|medium] [--style A|B|dark] [--force]``
or :func:`build_phantom` writes six kidney-like HiP-CT volumes as slice folders (uint16 TIFF images,
uint8 0/255 TIFF labels, lossless 16-bit JPEG 2000 for the external HOA kidney) plus
``sample_submission.csv``, ``train_rles.csv`` and a Kaggle-scorer ``solution.csv`` for the test kidneys.

Every kidney is defined in physical units (millimetres) and rendered on the grid of its own voxel
size, so ``kidney_6`` (63.08 um) is the same kind of organ as ``kidney_5`` (50 um) on a coarser grid.
A kidney is a deformed bean with a brighter cortex, smoothed-noise texture and bright non-vessel
blobs, holding two branching vessel trees that start at the hilum. Vessel pieces are capsules
(tapered line segments); the label of a voxel is ``distance to its segment < radius`` at the voxel's
centre. The image is the object rendered on a finer grid and *acquired* (:mod:`.acquisition`:
voxel integration, a PSF proportional to the voxel, Poisson-Gaussian noise set by a dose, per-scan
gain/offset, low-frequency shading, optional rings). Thin vessels are fainter, so a single global
threshold cannot separate vessels from cortex and blobs. A *style* (``--style``) is a family of scans
with its own texture, vessel contrast (sign and strength) and noise: train on one, test on another.

Sparse kidneys (``kidney_2``, ``kidney_3_sparse``) drop whole vessel pieces from their labels until
about 65 % / 85 % of the dense vessel voxels remain, like the real annotations.

The modules, in the order a build uses them: :mod:`.specs` (size presets and one spec per kidney, its
folders and voxel size from the volume registry), :mod:`.geometry` (organ and vessel trees),
:mod:`.render` (one kidney's object, labels and image), :mod:`.acquisition` (styles and the imaging
model), :mod:`.layout` (the Kaggle folders and CSVs), :mod:`.build` (the safe build into ``--out``) and
``__main__`` (the command line).
"""

from src.data.phantom.acquisition import STYLES, PhantomStyle, style_of
from src.data.phantom.build import BUILDING_MARKER_NAME, MARKER_NAME, build_phantom
from src.data.phantom.geometry import grid_shape
from src.data.phantom.render import RenderedKidney, render_kidney
from src.data.phantom.specs import HOA_NAME, KIDNEYS, SIZES, KidneySpec, SizePreset, kidney_extent_mm

__all__ = [
    "BUILDING_MARKER_NAME", "HOA_NAME", "KIDNEYS", "MARKER_NAME", "SIZES", "STYLES", "KidneySpec", "PhantomStyle",
    "RenderedKidney", "SizePreset", "build_phantom", "grid_shape", "kidney_extent_mm", "render_kidney", "style_of",
]
