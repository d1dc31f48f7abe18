"""Rendering one phantom kidney: vessels, tissue texture, acquisition, the uint16 window.

:func:`render_kidney` draws the organ and its vessel trees (:mod:`src.data.phantom.geometry`), renders
the object on a grid ``style.oversample`` times finer than the scan, acquires it
(:mod:`src.data.phantom.acquisition`) and maps it to the kidney's uint16 window; the labels are the
vessels at the acquired voxels' centres, with whole pieces dropped for the sparse kidneys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from src.data.phantom.acquisition import PhantomStyle, acquire, style_of
from src.data.phantom.geometry import (
    OrganGeometry,
    VesselTree,
    cosine_field,
    grid_axes,
    grid_shape,
    grow_vessel_trees,
    make_organ_geometry,
    organ_level,
)
from src.data.phantom.specs import KIDNEYS, check_seed, kidney_extent_mm, size_preset
from src.utils.errors import UserError


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


@dataclass(frozen=True)
class KidneyScene:
    """What a kidney is made of before it is imaged: its organ and vessel trees, the grids and the random
    streams that draw its texture, labels and acquisition (:func:`kidney_scene`)."""

    name: str
    style: PhantomStyle
    voxel_um: float
    shape: tuple[int, int, int]  # the acquired grid
    geometry: OrganGeometry
    tree: VesselTree
    keys: np.ndarray  # a random order of the vessel pieces (sparse labels drop the lowest)
    rngs: dict[str, np.random.Generator]  # texture, blob, acquisition

    @property
    def voxel_mm(self) -> float:
        return self.voxel_um / 1000.0

    @property
    def fine(self) -> tuple[tuple[int, int, int], float]:
        """(shape, voxel size in mm) of the grid ``style.oversample`` times finer that the object is rendered on."""
        k = int(self.style.oversample)
        return tuple(n * k for n in self.shape), self.voxel_mm / k  # type: ignore[return-value]


def kidney_scene(name: str, seed: int = 0, size: str = "tiny", voxel_um: float | None = None,
                 style: str | PhantomStyle = "A") -> KidneyScene:
    """The organ, vessel trees and random streams of kidney ``name`` (see :func:`render_kidney`)."""
    if name not in KIDNEYS:
        raise UserError(f"unknown phantom kidney {name!r}; choose one of {', '.join(KIDNEYS)}")
    spec = KIDNEYS[name]
    style = style_of(style)
    preset = size_preset(size)
    voxel_um = spec.voxel_um if voxel_um is None else float(voxel_um)
    children = np.random.SeedSequence([check_seed(seed), spec.seed_key]).spawn(7)
    geometry_rng, tree_rng, texture_rng, blob_rng, label_rng, _, acquisition_rng = (np.random.default_rng(c) for c in children)
    extent = kidney_extent_mm(spec, size)
    geom = make_organ_geometry(extent, geometry_rng)
    tree = grow_vessel_trees(geom, preset, tree_rng)
    keys = label_rng.permutation(tree.count) + 1
    return KidneyScene(name, style, voxel_um, grid_shape(extent, voxel_um), geom, tree, keys,
                       {"texture": texture_rng, "blob": blob_rng, "acquisition": acquisition_rng})


def render_kidney(name: str, seed: int = 0, size: str = "tiny", voxel_um: float | None = None,
                  style: str | PhantomStyle = "A") -> RenderedKidney:
    """Render kidney ``name`` exactly as :func:`build_phantom` writes it for ``seed``, ``size`` and ``style``.

    The object (tissue and vessels) is rendered on a grid ``style.oversample`` times finer than the
    kidney's voxels and acquired by :func:`src.data.phantom.acquisition.acquire` (voxel integration, PSF,
    Poisson-Gaussian noise, per-scan gain, shading, rings); the label of a voxel is whether its centre
    lies inside a vessel. ``voxel_um`` overrides the kidney's voxel size: the same physical organ,
    vessels and blobs acquired on another grid (the texture noise is drawn per voxel, so it differs).
    """
    scene = kidney_scene(name, seed, size, voxel_um, style)
    spec, style = KIDNEYS[name], scene.style
    _, key = render_capsules(scene.tree, scene.keys, scene.shape, scene.voxel_mm, style)  # labels on the acquired grid
    truth = key > 0
    if spec.labelled_fraction is None:
        labels, labelled = truth, 1.0
    else:
        labels, labelled = choose_labelled(key, scene.tree.count, spec.labelled_fraction)
    fine_shape, fine_mm = scene.fine
    obj = render_tissue(scene.geometry, fine_shape, fine_mm, scene.rngs["texture"], scene.rngs["blob"], style)
    signal, _ = render_capsules(scene.tree, scene.keys, fine_shape, fine_mm, style)
    obj += signal
    del signal
    image = acquire(obj, style, scene.voxel_um, scene.rngs["acquisition"])
    return RenderedKidney(name, scene.voxel_um, apply_window(image, spec.window), truth, labels, labelled)
