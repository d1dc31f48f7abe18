"""Synthetic phantom of the competition data, in exactly the Kaggle folder layout.

``python -m src.data.phantom --out DIR [--seed N] [--size tiny|small|medium] [--style A|B|dark] [--force]`` or
:func:`build_phantom` writes six kidney-like HiP-CT volumes as slice folders (uint16 TIFF images,
uint8 0/255 TIFF labels, lossless 16-bit JPEG 2000 for the external HOA kidney) plus
``sample_submission.csv``, ``train_rles.csv`` and a Kaggle-scorer ``solution.csv`` for the test kidneys.

Every kidney is defined in physical units (millimetres) and rendered on the grid of its own voxel
size, so ``kidney_6`` (63.08 um) is the same kind of organ as ``kidney_5`` (50 um) on a coarser grid.
A kidney is a deformed bean with a brighter cortex, smoothed-noise texture and bright non-vessel
blobs, holding two branching vessel trees that start at the hilum. Vessel pieces are capsules
(tapered line segments); the label of a voxel is ``distance to its segment < radius`` at the voxel's
centre. The image is the object rendered on a finer grid and *acquired* (:mod:`src.data.acquisition`:
voxel integration, a PSF proportional to the voxel, Poisson-Gaussian noise set by a dose, per-scan
gain/offset, low-frequency shading, optional rings). Thin vessels are fainter, so a single global
threshold cannot separate vessels from cortex and blobs. A *style* (``--style``) is a family of scans
with its own texture, vessel contrast (sign and strength) and noise: train on one, test on another.

Sparse kidneys (``kidney_2``, ``kidney_3_sparse``) drop whole vessel pieces from their labels until
about 65 % / 85 % of the dense vessel voxels remain, like the real annotations.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from src.data.acquisition import STYLES, PhantomStyle, acquire, style_of
from src.data.volumes import read_slice, write_slice
from src.metrics.rle import EMPTY_RLE, rle_encode
from src.utils.errors import UserError, cli_main
from src.utils.files import TMP_TAG, atomic_output, sweep_stale

GENERATOR = "src.data.phantom"
FORMAT_VERSION = 2  # 2: acquisition model and styles
MARKER_NAME = ".phantom.json"
BUILDING_MARKER_NAME = ".phantom-building"
HOA_NAME = "50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_"
VOXEL_UM_KIDNEY_6 = 63.08


@dataclass(frozen=True)
class SizePreset:
    """How big a build is: organ scale and vessel-tree depth."""

    scale: float  # multiplies every kidney's physical extent (1.0 = "small")
    generations: int  # vessel generations below (and including) the root branches
    root_radius_um: float  # radius of the root vessels where they enter at the hilum
    side_branch_probability: float  # chance of a side twig at each joint between the pieces of a branch


SIZES: dict[str, SizePreset] = {
    "tiny": SizePreset(scale=0.28, generations=3, root_radius_um=165.0, side_branch_probability=0.6),
    "small": SizePreset(scale=1.0, generations=4, root_radius_um=380.0, side_branch_probability=0.7),
    "medium": SizePreset(scale=2.3, generations=5, root_radius_um=640.0, side_branch_probability=0.9),
}


@dataclass(frozen=True)
class KidneySpec:
    """One rendered volume: where it goes, its physical extent, voxel size and intensity window."""

    name: str  # volume identity, also the child-seed key
    split: str  # "train", "test" or "train_ext"
    extent_mm: tuple[float, float, float]  # physical (Z, H, W) at size "small"
    voxel_um: float
    window: tuple[int, int]  # uint16 values of the 10th and 99.8th intensity percentiles
    labelled_fraction: float | None  # share of vessel voxels labelled; None: labels not written
    seed_key: int


KIDNEYS: dict[str, KidneySpec] = {
    spec.name: spec
    for spec in (
        KidneySpec("kidney_1_dense", "train", (5.0, 10.15, 8.35), 50.0, (20243, 29649), 1.0, 1),
        KidneySpec("kidney_2", "train", (5.5, 8.55, 12.45), 50.0, (29784, 42380), 0.65, 2),
        KidneySpec("kidney_3", "train", (4.5, 12.2, 10.7), 50.16, (18806, 21944), 0.85, 3),
        KidneySpec("kidney_5", "test", (4.8, 9.35, 11.45), 50.0, (24512, 33870), None, 5),
        KidneySpec("kidney_6", "test", (4.8, 9.35, 11.45), VOXEL_UM_KIDNEY_6, (26931, 38254), None, 6),
        KidneySpec(HOA_NAME, "train_ext", (5.2, 10.55, 9.05), 50.0, (15500, 35605), None, 7),
    )
}

# the image model's levels, contrasts and noise are a style's (src.data.acquisition.PhantomStyle)
MIN_VESSEL_RADIUS_MM = 0.03
PIECES_PER_BRANCH = 3


# --------------------------------------------------------------------------------------------
# organ geometry (physical units, millimetres; origin at the volume corner)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrganGeometry:
    """A bean: ellipsoid + Gaussian dent at the hilum + smooth random low-frequency deformation."""

    extent_mm: np.ndarray  # (3,) physical size of the imaged box
    centre: np.ndarray  # (3,)
    semi_axes: np.ndarray  # (3,)
    hilum: np.ndarray  # (3,) centre of the dent, on the ellipsoid surface
    hilum_normal: np.ndarray  # (3,) outward unit vector at the hilum
    dent_depth: float
    dent_width_mm: float
    deformation: np.ndarray  # (K, 7) rows of amplitude, 3 wave numbers (rad/mm), 3 phases
    shading: np.ndarray  # (K, 7) same form, for the low-frequency intensity shading


def random_cosine_waves(
    rng: np.random.Generator, count: int, amplitude: float, wavelength_mm: tuple[float, float]
) -> np.ndarray:
    """Rows ``(amplitude, kz, ky, kx, phase_z, phase_y, phase_x)`` of separable cosine products."""
    amplitudes = amplitude * rng.uniform(0.5, 1.0, count)
    wave_numbers = 2 * np.pi / rng.uniform(*wavelength_mm, (count, 3))
    phases = rng.uniform(0, 2 * np.pi, (count, 3))
    return np.column_stack([amplitudes, wave_numbers, phases])


def cosine_field(waves: np.ndarray, z, y, x):
    """Sum of ``a * cos(kz z + pz) * cos(ky y + py) * cos(kx x + px)``; z, y, x broadcast together."""
    total = 0.0
    for amplitude, kz, ky, kx, pz, py, px in waves.tolist():  # python floats keep float32 arrays float32
        total = total + amplitude * np.cos(kz * z + pz) * np.cos(ky * y + py) * np.cos(kx * x + px)
    return total


def make_organ_geometry(extent_mm: np.ndarray, rng: np.random.Generator) -> OrganGeometry:
    """Draw a bean-shaped organ filling most of the box, hilum on one side of the short horizontal axis."""
    extent_mm = np.asarray(extent_mm, dtype=np.float64)
    centre = extent_mm / 2 + rng.uniform(-0.02, 0.02, 3) * extent_mm
    semi_axes = extent_mm * rng.uniform(0.41, 0.44, 3)
    short_axis = 1 if semi_axes[1] < semi_axes[2] else 2
    normal = np.zeros(3)
    normal[short_axis] = rng.choice([-1.0, 1.0])
    hilum = centre + normal * semi_axes[short_axis]
    mean_size = float(np.mean(semi_axes))
    return OrganGeometry(
        extent_mm=extent_mm,
        centre=centre,
        semi_axes=semi_axes,
        hilum=hilum,
        hilum_normal=normal,
        dent_depth=float(rng.uniform(0.3, 0.4)),
        dent_width_mm=float(0.45 * semi_axes[short_axis]),
        deformation=random_cosine_waves(rng, 3, 0.035, (1.5 * mean_size, 3.5 * mean_size)),
        shading=random_cosine_waves(rng, 3, 1.0, (0.8 * mean_size, 2.5 * mean_size)),
    )


def organ_level(geom: OrganGeometry, z, y, x):
    """Implicit organ function: below 1 inside the body, 0 at its centre, ~1 on its surface.

    ``z, y, x`` are physical coordinates (mm) that broadcast together: three axis vectors shaped
    (Z,1,1), (1,H,1), (1,1,W) give a whole volume, three equal-length arrays give points.
    """
    cz, cy, cx = geom.centre.tolist()
    az, ay, ax = geom.semi_axes.tolist()
    level = np.sqrt(((z - cz) / az) ** 2 + ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2)
    hz, hy, hx = geom.hilum.tolist()
    dent = np.exp(-(((z - hz) ** 2) + ((y - hy) ** 2) + ((x - hx) ** 2)) / (2 * geom.dent_width_mm**2))
    return level + geom.dent_depth * dent + cosine_field(geom.deformation, z, y, x)


def point_level(geom: OrganGeometry, point: np.ndarray) -> float:
    """:func:`organ_level` of one point."""
    return float(organ_level(geom, point[0], point[1], point[2]))


def grid_axes(shape: tuple[int, int, int], voxel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical voxel-centre coordinates as broadcastable float32 axis vectors (Z,1,1), (1,H,1), (1,1,W)."""
    axes = [(np.arange(n, dtype=np.float32) + 0.5) * np.float32(voxel_mm) for n in shape]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def grid_shape(extent_mm: np.ndarray, voxel_um: float) -> tuple[int, int, int]:
    """Voxel counts covering ``extent_mm``; a count that is a multiple of 32 grows by one voxel."""
    counts = [max(int(round(e * 1000.0 / voxel_um)), 8) for e in extent_mm]
    return tuple(n + 1 if n % 32 == 0 else n for n in counts)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# vessel trees
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VesselTree:
    """Vessel pieces as tapered capsules, physical units (mm); one row per piece."""

    start: np.ndarray  # (N, 3)
    end: np.ndarray  # (N, 3)
    radius_start: np.ndarray  # (N,)
    radius_end: np.ndarray  # (N,)

    @property
    def count(self) -> int:
        return int(self.start.shape[0])


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to length 1."""
    return vector / np.linalg.norm(vector)


def random_perpendicular(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to ``direction``."""
    while True:
        candidate = rng.standard_normal(3)
        candidate -= candidate.dot(direction) * direction
        norm = np.linalg.norm(candidate)
        if norm > 1e-6:
            return candidate / norm


def turn(direction: np.ndarray, angle: float, towards: np.ndarray) -> np.ndarray:
    """Rotate the unit ``direction`` by ``angle`` (radians) towards the perpendicular unit ``towards``."""
    return unit(np.cos(angle) * direction + np.sin(angle) * towards)


def hilum_entry(geom: OrganGeometry) -> np.ndarray:
    """First point on the way from the hilum dent towards the centre that lies inside the body."""
    inward = -geom.hilum_normal
    depth = np.linalg.norm(geom.hilum - geom.centre)
    steps = np.linspace(0.0, depth, 65)
    points = geom.hilum[None, :] + steps[:, None] * inward[None, :]
    levels = organ_level(geom, points[:, 0], points[:, 1], points[:, 2])
    inside = np.flatnonzero(levels < 1.0)
    return points[inside[0]] if inside.size else geom.centre.copy()


class _TreeGrower:
    """Grows branches piece by piece, steering them back when they would leave the organ."""

    max_level = 0.92

    def __init__(self, geom: OrganGeometry, preset: SizePreset, rng: np.random.Generator):
        self.geom = geom
        self.preset = preset
        self.rng = rng
        self.rows: list[tuple[np.ndarray, np.ndarray, float, float]] = []

    def grow_roots(self) -> None:
        """Two roots enter at the hilum and head into the organ, diverging towards its two poles."""
        geom, rng = self.geom, self.rng
        start = hilum_entry(geom)
        inward = -geom.hilum_normal
        long_axis = np.zeros(3)
        long_axis[1 if geom.hilum_normal[2] != 0 else 2] = 1.0
        length = 0.6 * float(np.max(geom.semi_axes))
        radius = self.preset.root_radius_um / 1000.0
        for sign in (1.0, -1.0):
            spread = np.radians(rng.uniform(25, 45))
            direction = turn(inward, spread, sign * long_axis)
            direction = turn(direction, np.radians(rng.normal(0, 10)), random_perpendicular(direction, rng))
            self.grow_branch(start, direction, radius * rng.uniform(0.9, 1.1), length * rng.uniform(0.9, 1.1), 0)

    def grow_branch(
        self, start: np.ndarray, direction: np.ndarray, radius: float, length: float, generation: int
    ) -> None:
        """A slightly tortuous branch of a few tapered pieces with side twigs, ending in two or three children."""
        rng = self.rng
        end_radius = radius * 0.9
        point = start
        piece_length = length / PIECES_PER_BRANCH
        for piece in range(PIECES_PER_BRANCH):
            if piece > 0 and rng.random() < self.preset.side_branch_probability:
                self.grow_child(point, direction, radius, length, generation, side=True)
            direction = turn(direction, np.radians(rng.normal(0, 12)), random_perpendicular(direction, rng))
            step = self.step_inside(point, direction, piece_length)
            if step is None:
                return
            next_point, direction = step
            r0 = radius + (end_radius - radius) * piece / PIECES_PER_BRANCH
            r1 = radius + (end_radius - radius) * (piece + 1) / PIECES_PER_BRANCH
            self.rows.append((point, next_point, r0, r1))
            point = next_point
        n_children = 3 if rng.random() < 0.2 else 2
        reference = random_perpendicular(direction, rng)
        for child in range(n_children):
            phi = 2 * np.pi * child / n_children + rng.normal(0, 0.3)
            self.grow_child(point, direction, radius, length, generation, side=False, fan=(reference, phi))

    def grow_child(
        self,
        point: np.ndarray,
        direction: np.ndarray,
        radius: float,
        length: float,
        generation: int,
        side: bool,
        fan: tuple[np.ndarray, float] | None = None,
    ) -> None:
        """One child branch: a terminal child (0.6-0.8 of the parent radius) or a thinner, steeper side twig.

        ``fan = (reference, phi)`` turns the child towards the perpendicular ``reference`` rotated by
        ``phi`` around the parent direction, so siblings spread evenly; without it the turn is random.
        """
        rng = self.rng
        if generation + 1 >= self.preset.generations:
            return
        if fan is None:
            towards = random_perpendicular(direction, rng)
        else:
            reference, phi = fan
            towards = np.cos(phi) * reference + np.sin(phi) * np.cross(direction, reference)
        if side:
            ratio, angle, length_ratio = rng.uniform(0.45, 0.6), rng.uniform(50, 80), rng.uniform(0.45, 0.65)
        else:
            ratio, angle, length_ratio = rng.uniform(0.6, 0.8), rng.uniform(25, 50), rng.uniform(0.7, 0.9)
        if radius * ratio < MIN_VESSEL_RADIUS_MM:
            return
        child_direction = turn(direction, np.radians(angle), towards)
        self.grow_branch(point, child_direction, radius * ratio, length * length_ratio, generation + 1)

    def step_inside(self, point: np.ndarray, direction: np.ndarray, length: float):
        """Next piece end within the organ, bending towards the centre up to three times; None if impossible."""
        for _ in range(4):
            candidate = point + direction * length
            if point_level(self.geom, candidate) < self.max_level:
                return candidate, direction
            direction = unit(direction + 1.2 * unit(self.geom.centre - candidate))
            length *= 0.75
        return None

    def tree(self) -> VesselTree:
        """The grown pieces as arrays."""
        rows = self.rows
        return VesselTree(
            start=np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, 3),
            end=np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 3),
            radius_start=np.array([r[2] for r in rows], dtype=np.float64),
            radius_end=np.array([r[3] for r in rows], dtype=np.float64),
        )


def grow_vessel_trees(geom: OrganGeometry, preset: SizePreset, rng: np.random.Generator) -> VesselTree:
    """Two recursively branching vessel trees rooted at the hilum (``preset.generations`` levels)."""
    grower = _TreeGrower(geom, preset, rng)
    grower.grow_roots()
    return grower.tree()


def render_capsules(
    tree: VesselTree, keys: np.ndarray, shape: tuple[int, int, int], voxel_mm: float, style: PhantomStyle
) -> tuple[np.ndarray, np.ndarray]:
    """Render every piece inside its own bounding box.

    Returns ``signal`` (float32: partial-volume occupancy times the piece's contrast, max over
    pieces, signed by the style's contrast) and ``key`` (unsigned: the largest key of the pieces whose capsule holds the voxel centre,
    0 outside all vessels), so ``key > 0`` is the dense vessel label.
    """
    signal = np.zeros(shape, dtype=np.float32)
    key_type = np.uint16 if int(np.max(keys, initial=0)) < 2**16 else np.uint32
    key = np.zeros(shape, dtype=key_type)
    # voxel index coordinates: voxel i has its centre at (i + 0.5) * voxel
    starts = tree.start / voxel_mm - 0.5
    ends = tree.end / voxel_mm - 0.5
    r_starts = tree.radius_start / voxel_mm
    r_ends = tree.radius_end / voxel_mm
    contrasts = np.abs(style.vessel_signal((tree.radius_start + tree.radius_end) / 2)).astype(np.float32)
    upper = np.array(shape)
    for i in range(tree.count):
        a, b = starts[i], ends[i]
        margin = max(r_starts[i], r_ends[i]) + 1.0
        lo = np.maximum(np.floor(np.minimum(a, b) - margin), 0).astype(int)
        hi = np.minimum(np.ceil(np.maximum(a, b) + margin) + 1, upper).astype(int)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(start, stop) for start, stop in zip(lo, hi))
        distance, radius = capsule_distance(a, b, r_starts[i], r_ends[i], lo, hi)
        occupancy = np.clip(radius - distance + 0.5, 0.0, 1.0)
        np.maximum(signal[box], occupancy * contrasts[i], out=signal[box])
        np.maximum(key[box], np.where(distance < radius, key_type(keys[i]), key_type(0)), out=key[box])
    if style.vessel_contrast < 0:
        np.negative(signal, out=signal)
    return signal, key


def capsule_distance(
    a: np.ndarray, b: np.ndarray, ra: float, rb: float, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each voxel in the box ``[lo, hi)`` to segment ``a-b``, and the tapered radius there.

    Everything in voxel index units; the radius goes linearly from ``ra`` at ``a`` to ``rb`` at ``b``.
    """
    rel = [np.arange(lo[k], hi[k], dtype=np.float32) - np.float32(a[k]) for k in range(3)]
    rz, ry, rx = rel[0][:, None, None], rel[1][None, :, None], rel[2][None, None, :]
    d = (b - a).astype(np.float32)
    length2 = float(d @ d)
    if length2 > 0:
        t = (rz * d[0] + ry * d[1] + rx * d[2]) / np.float32(length2)
        np.clip(t, 0.0, 1.0, out=t)
    else:
        t = np.zeros((rz.shape[0], ry.shape[1], rx.shape[2]), dtype=np.float32)
    distance = np.sqrt((rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2)
    radius = np.float32(ra) + t * np.float32(rb - ra)
    return distance, radius


def choose_labelled(key: np.ndarray, n_pieces: int, fraction: float) -> tuple[np.ndarray, float]:
    """Drop the pieces with the lowest keys until about ``fraction`` of the vessel voxels stay labelled.

    Keys are a random permutation of the pieces, so whole pieces vanish from the labels, never
    scattered voxels. Returns the labelled mask and the labelled share of the dense vessel voxels.
    """
    if fraction >= 1.0:
        return key > 0, 1.0
    counts = np.bincount(key[key > 0], minlength=n_pieces + 1)[1:].astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return key > 0, 1.0
    # kept share when the k lowest keys are dropped, k = 0 .. n
    kept = np.concatenate([[total], total - np.cumsum(counts)]) / total
    k = int(np.argmin(np.abs(kept - fraction)))
    return key > k, float(kept[k])


# --------------------------------------------------------------------------------------------
# image content
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextureLayer:
    """Smoothed tissue noise and bright blobs of one spatial scale, blurred together in one pass."""

    sigma_mm: float  # Gaussian blur of the layer
    noise_std: float  # standard deviation of the smoothed noise
    blobs_per_mm3: float  # density of bright blobs inside the body
    blob_peak: tuple[float, float]  # range of blob peak intensities


TEXTURE_LAYERS = (
    TextureLayer(sigma_mm=0.05, noise_std=0.03, blobs_per_mm3=8.0, blob_peak=(0.3, 0.55)),  # grain, speckles
    TextureLayer(sigma_mm=0.11, noise_std=0.045, blobs_per_mm3=1.5, blob_peak=(0.2, 0.4)),  # mottling, blobs
)


def gaussian_weights(sigma_vox: float) -> np.ndarray:
    """The normalised 1-D kernel ``ndimage.gaussian_filter`` uses for ``sigma_vox`` (truncate 4)."""
    radius = int(4.0 * sigma_vox + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_vox) ** 2)
    return weights / weights.sum()


def blob_impulses(
    geom: OrganGeometry, body: np.ndarray, voxel_mm: float, layer: TextureLayer, rng: np.random.Generator
) -> np.ndarray:
    """Point impulses (float32) at random physical positions inside the body, valued at the blob peaks."""
    shape = body.shape
    volume_mm3 = 4.0 / 3.0 * np.pi * float(np.prod(geom.semi_axes))
    count = int(rng.poisson(layer.blobs_per_mm3 * volume_mm3))
    positions = rng.uniform(0.0, 1.0, (count, 3)) * geom.extent_mm
    peaks = rng.uniform(*layer.blob_peak, count).astype(np.float32)
    index = np.minimum((positions / voxel_mm).astype(int), np.array(shape) - 1)
    inside = body[index[:, 0], index[:, 1], index[:, 2]]
    impulses = np.zeros(shape, dtype=np.float32)
    np.add.at(impulses, tuple(index[inside].T), peaks[inside])
    return impulses


def styled_layer(layer: TextureLayer, style: PhantomStyle) -> TextureLayer:
    """``layer`` with the style's texture scale, contrast and blob density."""
    return TextureLayer(layer.sigma_mm * style.texture_sigma_scale, layer.noise_std * style.texture_std_scale,
                        layer.blobs_per_mm3 * style.blob_density_scale, layer.blob_peak)


def render_texture_layer(
    geom: OrganGeometry,
    body: np.ndarray,
    voxel_mm: float,
    layer: TextureLayer,
    noise_rng: np.random.Generator,
    blob_rng: np.random.Generator,
) -> np.ndarray:
    """One blur of white noise plus blob impulses: noise of std ``layer.noise_std``, blobs peaking at their values."""
    sigma_vox = max(layer.sigma_mm / voxel_mm, 0.5)
    weights = gaussian_weights(sigma_vox)
    noise_gain = float((weights**2).sum()) ** 1.5  # std of blurred unit white noise in 3-D
    peak_gain = float(weights.max()) ** 3  # peak of a blurred unit impulse
    field = noise_rng.standard_normal(body.shape, dtype=np.float32)
    field *= np.float32(layer.noise_std / noise_gain)
    field += blob_impulses(geom, body, voxel_mm, layer, blob_rng) / np.float32(peak_gain)
    return ndimage.gaussian_filter(field, sigma_vox)


def render_tissue(
    geom: OrganGeometry,
    shape: tuple[int, int, int],
    voxel_mm: float,
    noise_rng: np.random.Generator,
    blob_rng: np.random.Generator,
    style: PhantomStyle,
) -> np.ndarray:
    """The vessel-free object: dim background, textured tissue with bright blobs, brighter cortex rim."""
    z, y, x = grid_axes(shape, voxel_mm)
    level = organ_level(geom, z, y, x).astype(np.float32)
    body = level < 1.0
    fine, coarse = (
        render_texture_layer(geom, body, voxel_mm, styled_layer(layer, style), noise_rng, blob_rng) for layer in TEXTURE_LAYERS
    )
    cortex = np.clip((level - 0.72) / 0.12, 0.0, 1.0)
    shading = cosine_field(geom.shading, z, y, x) / float(max(np.abs(geom.shading[:, 0]).sum(), 1e-6))
    tissue = style.tissue_level + style.cortex_boost * cortex + style.tissue_shading * shading + coarse + fine
    background = style.background_level + coarse / 3
    return np.where(body, tissue, background).astype(np.float32)


def apply_window(image: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Map the 10th / 99.8th percentiles of ``image`` linearly onto ``window`` and cast to uint16."""
    sample = image.ravel()[:: max(image.size // 2_000_000, 1)]
    p10, p998 = np.percentile(sample, [10.0, 99.8])
    lo, hi = window
    scale = (hi - lo) / max(float(p998 - p10), 1e-6)
    mapped = (image - np.float32(p10)) * np.float32(scale) + np.float32(lo)
    return np.clip(np.rint(mapped), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# one kidney
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedKidney:
    """A rendered volume and its truth, shapes (Z, H, W)."""

    name: str
    voxel_um: float
    image: np.ndarray  # uint16
    truth: np.ndarray  # bool, dense vessel label
    labels: np.ndarray  # bool, what the label files hold (equals truth for dense kidneys)
    labelled_fraction: float  # labelled share of the truth voxels

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.image.shape)  # type: ignore[return-value]

    @property
    def vessel_fraction(self) -> float:
        return float(self.truth.mean())


def size_preset(size: str) -> SizePreset:
    """The :class:`SizePreset` called ``size``; :class:`UserError` for an unknown name."""
    if size not in SIZES:
        raise UserError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def kidney_extent_mm(spec: KidneySpec, size: str) -> np.ndarray:
    """Physical (Z, H, W) extent of ``spec`` at ``size``."""
    return np.asarray(spec.extent_mm, dtype=np.float64) * size_preset(size).scale


def render_kidney(name: str, seed: int = 0, size: str = "tiny", voxel_um: float | None = None,
                  style: str | PhantomStyle = "A") -> RenderedKidney:
    """Render kidney ``name`` exactly as :func:`build_phantom` writes it for ``seed``, ``size`` and ``style``.

    The object (tissue and vessels) is rendered on a grid ``style.oversample`` times finer than the
    kidney's voxels and acquired by :func:`src.data.acquisition.acquire` (voxel integration, PSF,
    Poisson-Gaussian noise, per-scan gain, shading, rings); the label of a voxel is whether its centre
    lies inside a vessel. ``voxel_um`` overrides the kidney's voxel size: the same physical organ,
    vessels and blobs acquired on another grid (the texture noise is drawn per voxel, so it differs).
    """
    if name not in KIDNEYS:
        raise UserError(f"unknown phantom kidney {name!r}; choose one of {', '.join(KIDNEYS)}")
    spec = KIDNEYS[name]
    style = style_of(style)
    preset = size_preset(size)
    voxel_um = spec.voxel_um if voxel_um is None else float(voxel_um)
    voxel_mm = voxel_um / 1000.0
    children = np.random.SeedSequence([check_seed(seed), spec.seed_key]).spawn(7)
    geometry_rng, tree_rng, texture_rng, blob_rng, label_rng, _, acquisition_rng = (np.random.default_rng(c) for c in children)
    extent = kidney_extent_mm(spec, size)
    shape = grid_shape(extent, voxel_um)
    geom = make_organ_geometry(extent, geometry_rng)
    tree = grow_vessel_trees(geom, preset, tree_rng)
    keys = label_rng.permutation(tree.count) + 1
    k = int(style.oversample)
    fine_shape, fine_mm = tuple(n * k for n in shape), voxel_mm / k
    _, key = render_capsules(tree, keys, shape, voxel_mm, style)  # labels on the acquired grid
    truth = key > 0
    if spec.labelled_fraction is None:
        labels, labelled = truth, 1.0
    else:
        labels, labelled = choose_labelled(key, tree.count, spec.labelled_fraction)
    obj = render_tissue(geom, fine_shape, fine_mm, texture_rng, blob_rng, style)
    signal, _ = render_capsules(tree, keys, fine_shape, fine_mm, style)
    obj += signal
    del signal
    image = acquire(obj, style, voxel_um, acquisition_rng)
    return RenderedKidney(name, voxel_um, apply_window(image, spec.window), truth, labels, labelled)


def check_seed(seed: int) -> int:
    """``seed`` as a non-negative int; :class:`UserError` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"phantom seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def slice_name(index: int) -> str:
    """4-digit zero-padded slice number."""
    return f"{index:04d}"


def write_slices(folder: Path, volume: np.ndarray, first: int = 0, suffix: str = ".tif") -> None:
    """One file per z slice (the volume store's writer), named by slice number starting at ``first``."""
    folder.mkdir(parents=True, exist_ok=True)
    for offset, plane in enumerate(volume):
        write_slice(folder / f"{slice_name(first + offset)}{suffix}", plane)


def write_jp2_slices(folder: Path, volume: np.ndarray) -> None:
    """Lossless 16-bit JPEG 2000 slices; the first is read back to prove it is lossless."""
    write_slices(folder, volume, suffix=".jp2")
    first = read_slice(folder / f"{slice_name(0)}.jp2")
    if first.dtype != volume.dtype or not np.array_equal(first, volume[0]):
        raise RuntimeError(f"JPEG 2000 round trip is not lossless in {folder} (check glymur/OpenJPEG)")


def label_planes(mask: np.ndarray) -> np.ndarray:
    """Boolean mask as uint8 0/255."""
    return mask.astype(np.uint8) * np.uint8(255)


def rle_rows(prefix: str, mask: np.ndarray, first: int = 0) -> list[tuple[str, str]]:
    """``(id, rle)`` for each z slice of ``mask``; ids ``<prefix>_<NNNN>``."""
    return [(f"{prefix}_{slice_name(first + i)}", rle_encode(plane)) for i, plane in enumerate(mask)]


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    """Plain CSV with ``\\n`` line ends."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def kidney_summary(
    kidney: RenderedKidney,
    split: str,
    window: tuple[int, int],
    *,
    first: int = 0,
    count: int | None = None,
    images: bool = True,
    labels: bool = True,
    labelled_fraction: float | None = None,
) -> dict:
    """Summary entry of one written folder (shape of the slices it holds)."""
    z, h, w = kidney.shape
    count = z if count is None else count
    truth = kidney.truth[first : first + count]
    return {
        "split": split,
        "shape": (count, h, w),
        "voxel_um": kidney.voxel_um,
        "first_slice": first,
        "window": tuple(int(v) for v in window),
        "images": images,
        "labels": labels,
        "vessel_fraction": round(float(truth.mean()), 6),
        "labelled_fraction": None if labelled_fraction is None else round(labelled_fraction, 6),
    }


def write_train_kidneys(root: Path, seed: int, size: str, summary: dict, train_rles: list, style: str = "A") -> None:
    """kidney_1_dense, kidney_2, kidney_3_sparse and kidney_3_dense (labels only, middle slices)."""
    for name in ("kidney_1_dense", "kidney_2", "kidney_3"):
        kidney = render_kidney(name, seed, size, style=style)
        spec = KIDNEYS[name]
        folder = "kidney_3_sparse" if name == "kidney_3" else name
        write_slices(root / "train" / folder / "images", kidney.image)
        write_slices(root / "train" / folder / "labels", label_planes(kidney.labels))
        train_rles.extend(rle_rows(folder, kidney.labels))
        summary[folder] = kidney_summary(kidney, "train", spec.window, labelled_fraction=kidney.labelled_fraction)
        if name == "kidney_3":
            z = kidney.shape[0]
            first, stop = z // 4, (3 * z) // 4
            dense = kidney.truth[first:stop]
            write_slices(root / "train" / "kidney_3_dense" / "labels", label_planes(dense), first)
            train_rles.extend(rle_rows("kidney_3_dense", dense, first))
            summary["kidney_3_dense"] = kidney_summary(
                kidney, "train", spec.window, first=first, count=stop - first, images=False, labelled_fraction=1.0
            )


def write_test_kidneys(root: Path, seed: int, size: str, summary: dict, style: str = "A") -> tuple[list, list]:
    """kidney_5 and kidney_6 images; returns sample-submission and solution rows."""
    sample, solution = [], []
    for name in ("kidney_5", "kidney_6"):
        kidney = render_kidney(name, seed, size, style=style)
        write_slices(root / "test" / name / "images", kidney.image)
        _, h, w = kidney.shape
        for z, (row_id, rle) in enumerate(rle_rows(name, kidney.truth)):
            sample.append((row_id, EMPTY_RLE))
            solution.append((row_id, rle, w, h, name, z))
        summary[name] = kidney_summary(kidney, "test", KIDNEYS[name].window, labels=False)
    return sample, solution


def write_external_kidney(root: Path, seed: int, size: str, summary: dict, style: str = "A") -> None:
    """The HOA kidney as JPEG 2000 slices, no labels."""
    kidney = render_kidney(HOA_NAME, seed, size, style=style)
    write_jp2_slices(root / "train_ext" / HOA_NAME / "images", kidney.image)
    summary[HOA_NAME] = kidney_summary(kidney, "train_ext", KIDNEYS[HOA_NAME].window, labels=False)


def write_phantom(root: Path, seed: int, size: str, style: str = "A") -> dict:
    """Write every folder and csv into ``root``; returns the per-folder summary."""
    summary: dict[str, dict] = {}
    train_rles: list[tuple[str, str]] = []
    write_train_kidneys(root, seed, size, summary, train_rles, style)
    sample, solution = write_test_kidneys(root, seed, size, summary, style)
    write_external_kidney(root, seed, size, summary, style)
    write_csv(root / "sample_submission.csv", ["id", "rle"], sample)
    write_csv(root / "train_rles.csv", ["id", "rle"], train_rles)
    write_csv(root / "solution.csv", ["id", "rle", "width", "height", "image_id", "slice_id"], solution)
    return summary


# --------------------------------------------------------------------------------------------
# safe build: temporary sibling, marker, refusal rules
# --------------------------------------------------------------------------------------------


def marker_content(seed: int, size: str, kidneys: dict, style: str = "A") -> dict:
    """What ``.phantom.json`` holds."""
    return {"generator": GENERATOR, "format_version": FORMAT_VERSION, "seed": seed, "size": size, "style": style,
            "kidneys": kidneys}


def read_marker(out: Path) -> dict | None:
    """The marker of ``out``, None when there is none; :class:`UserError` for a foreign or broken one."""
    path = out / MARKER_NAME
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("generator") != GENERATOR:
        raise UserError(f"{path} is not a readable phantom marker; refusing to touch {out}")
    for entry in marker.get("kidneys", {}).values():
        entry["shape"] = tuple(entry["shape"])
        entry["window"] = tuple(entry["window"])
    return marker


def is_same_build(marker: dict, seed: int, size: str, style: str = "A") -> bool:
    """Whether ``marker`` describes the build that ``seed``, ``size`` and ``style`` would write."""
    return (marker.get("seed") == seed and marker.get("size") == size and marker.get("style", "A") == style
            and marker.get("format_version") == FORMAT_VERSION)


def existing_build(out: Path, seed: int, size: str, force: bool, style: str = "A") -> dict | None:
    """Check ``out`` before building: the marker if the same build is already there, else None.

    Raises :class:`UserError` when ``out`` is a file, is non-empty without our marker, or holds
    another phantom and ``force`` is false.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    marker = read_marker(out)
    if marker is None:
        if any(out.iterdir()):
            raise UserError(
                f"--out {out} is a non-empty folder without a phantom marker; choose an empty or new folder"
            )
        return None
    if is_same_build(marker, seed, size, style) and not force:
        return marker
    if not force:
        raise UserError(
            f"--out {out} holds a phantom of seed {marker.get('seed')} size {marker.get('size')} style {marker.get('style', 'A')} "
            f"(version {marker.get('format_version')}); pass --force to replace it"
        )
    return None


def make_room(out: Path) -> None:
    """Clear the way for a finished build: remove an empty ``out`` or a previous phantom (our marker);
    refuse anything else (the finished build then stays at its temporary name)."""
    if (out / MARKER_NAME).exists():
        shutil.rmtree(out)
        return
    try:
        out.rmdir()
    except OSError:
        raise UserError(f"--out {out} was filled by someone else during the build; "
                        f"left the phantom next to it in {out.name}{TMP_TAG}*") from None


def build_phantom(out, seed: int = 0, size: str = "tiny", force: bool = False, style: str = "A") -> dict:
    """Build the phantom dataset in ``out`` (see the module docstring for the layout).

    Returns the marker content (``seed``, ``size``, ``kidneys``: per folder its ``shape`` (Z, H, W),
    ``voxel_um``, ``first_slice``, ``window``, ``vessel_fraction``, ``labelled_fraction``, ...) plus
    ``out``, ``existed`` (True when the same build was already there and nothing was written)
    and ``seconds``.
    """
    started = time.perf_counter()
    seed = check_seed(seed)
    size_preset(size)
    style = style_of(style).name
    out = Path(out).absolute()
    existing = existing_build(out, seed, size, force, style)
    if existing is not None:
        return {**existing, "out": str(out), "existed": True, "seconds": time.perf_counter() - started}
    sweep_stale(out, require=BUILDING_MARKER_NAME)
    with atomic_output(out, on_existing=make_room) as tmp:
        tmp.mkdir(parents=True)
        (tmp / BUILDING_MARKER_NAME).write_text(str(os.getpid()))  # proves an abandoned temporary is ours
        marker = marker_content(seed, size, write_phantom(tmp, seed, size, style), style)
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n")
        (tmp / BUILDING_MARKER_NAME).unlink()
    return {**marker, "out": str(out), "existed": False, "seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def summary_lines(summary: dict) -> list[str]:
    """One line per folder: split, shape, voxel size, vessel fraction, labelled fraction."""
    lines = []
    for folder, entry in summary["kidneys"].items():
        shape = "x".join(str(n) for n in entry["shape"])
        labelled = entry["labelled_fraction"]
        has_labels = labelled is not None and entry["labels"]
        label_text = f"labelled {100 * labelled:5.1f} %" if has_labels else "no label files"
        lines.append(
            f"{folder:<46} {entry['split']:<9} {shape:>12}  {entry['voxel_um']:6.2f} um  "
            f"vessels {100 * entry['vessel_fraction']:5.2f} %  {label_text}"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m src.data.phantom", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to create (RAW_DATA_DIR layout)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", choices=list(SIZES), default="tiny", help="tiny (tests), small (demo), medium (benchmarks)"
    )
    parser.add_argument("--style", choices=list(STYLES), default="A",
                        help="scan family: " + "; ".join(f"{k}: {v.description}" for k, v in STYLES.items()))
    parser.add_argument("--force", action="store_true", help="replace a phantom of another seed, size or style in --out")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    summary = build_phantom(args.out, seed=args.seed, size=args.size, force=args.force, style=args.style)
    if summary["existed"]:
        print(f"{summary['out']} already holds the phantom of seed {args.seed} size {args.size} style {args.style}; nothing written")
    for line in summary_lines(summary):
        print(line)
    print(f"phantom seed {args.seed} size {args.size} style {args.style} in {summary['out']}: {summary['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
