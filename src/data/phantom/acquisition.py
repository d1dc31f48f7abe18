"""How the phantom is *acquired*: phantom styles and a HiP-CT-like imaging model.

A phantom kidney is rendered as an object (tissue density plus vessel signal, in arbitrary intensity
units where tissue is about 0.3) on a grid ``oversample`` times finer than the scan's voxels, then
acquired the way a detector and a reconstruction would see it:

1. **per-scan gain and offset**: every kidney is scanned with its own exposure and reconstruction
   calibration, so its intensity is ``offset + gain * object`` (``gain_range``, ``offset_range``);
2. **low-frequency shading**: a smooth multiplicative field ``1 + shading_amplitude * f(z, y, x)``
   (beam profile, sample-holder and reconstruction bias; wavelengths of about the organ's size);
3. **voxel integration**: each acquired voxel is the *mean* of the ``oversample**3`` fine voxels it
   covers (area/volume averaging, so thin vessels are partial-volume faint, not point-sampled);
4. **point-spread function**: a Gaussian of ``psf_voxels`` acquired voxels (its physical width is
   proportional to the voxel size: a 63 um scan is blurrier in micrometres than a 50 um one);
5. **Poisson-Gaussian noise**: ``Poisson(dose_per_voxel * I) / dose_per_voxel + N(0, read_noise)``
   where ``dose_per_voxel = dose * (voxel_um / 50)**2`` (photons per unit intensity collected by a
   detector pixel of that size: larger voxels are less noisy);
6. **ring artefacts** (optional, ``ring_amplitude > 0``): concentric rings about the rotation axis
   (the z axis), the same in every slice, from miscalibrated detector columns;

and the result is mapped to the kidney's uint16 window by the phantom writer.

A :class:`PhantomStyle` holds all of these plus the object's own statistics (texture, vessel contrast
sign and strength), so a "style" is a family of scans: training on one and testing on another is a
test of generalisation (``python -m src.demo --style A --test-style B``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from src.utils.errors import UserError

REFERENCE_VOXEL_UM = 50.0  # voxel size at which ``dose`` is the photon count per unit intensity


@dataclass(frozen=True)
class PhantomStyle:
    """A family of scans: the object's statistics and the acquisition's physics (units in brackets)."""

    name: str
    description: str
    # the object (intensity units: tissue ~0.3, background ~0.06)
    background_level: float = 0.06  # mounting medium outside the organ
    tissue_level: float = 0.30  # mean tissue density
    cortex_boost: float = 0.35  # extra density of the cortex rim (brighter than most vessels)
    tissue_shading: float = 0.15  # smooth density variation inside the organ
    texture_std_scale: float = 1.5  # multiplies the standard deviation of the smoothed tissue noise
    texture_sigma_scale: float = 1.0  # multiplies the spatial scale [mm] of the texture layers
    blob_density_scale: float = 4.0  # multiplies the density of bright non-vessel blobs [1/mm^3]
    vessel_contrast: float = 0.50  # signed: vessel minus tissue for a very wide vessel (negative: dark lumen)
    vessel_half_radius_mm: float = 0.12  # radius at which a vessel reaches half of ``vessel_contrast`` [mm]
    # the acquisition
    oversample: int = 2  # fine-grid voxels per acquired voxel along each axis (1: point sampling)
    gain_range: tuple[float, float] = (0.9, 1.1)  # per-scan multiplicative exposure/calibration
    offset_range: tuple[float, float] = (-0.02, 0.02)  # per-scan additive calibration offset
    shading_amplitude: float = 0.15  # relative amplitude of the multiplicative low-frequency field
    psf_voxels: float = 0.7  # Gaussian PSF sigma in acquired voxels
    dose: float = 400.0  # photons per unit intensity per 50-um voxel (higher: less shot noise)
    read_noise: float = 0.03  # Gaussian detector/reconstruction noise (intensity units)
    ring_amplitude: float = 0.0  # peak amplitude of ring artefacts (intensity units; 0: none)
    ring_count: int = 6  # rings per scan when ``ring_amplitude > 0``

    def __post_init__(self):
        if self.oversample < 1 or int(self.oversample) != self.oversample:
            raise UserError(f"phantom style {self.name}: oversample must be a positive integer, got {self.oversample}")
        if self.dose <= 0 or self.read_noise < 0 or self.psf_voxels < 0:
            raise UserError(f"phantom style {self.name}: dose must be positive, read_noise and psf_voxels not negative")

    def vessel_signal(self, radius_mm: np.ndarray) -> np.ndarray:
        """Signed contrast of a vessel of ``radius_mm`` against tissue: thin vessels are fainter."""
        return self.vessel_contrast * radius_mm / (radius_mm + self.vessel_half_radius_mm)


STYLES: dict[str, PhantomStyle] = {
    style.name: style
    for style in (
        PhantomStyle(
            "A",
            "bright vessels, fine tissue grain, moderate dose, no rings (the default)",
        ),
        PhantomStyle(
            "B",
            "another scanner and sample: coarser, blobbier tissue, a denser cortex, a blurrier PSF, lower dose, "
            "wider exposure and calibration spread, strong shading and rings",
            tissue_level=0.34, cortex_boost=0.30, tissue_shading=0.18,
            texture_sigma_scale=1.4, blob_density_scale=5.0,
            gain_range=(0.75, 1.25), offset_range=(-0.05, 0.05), shading_amplitude=0.2,
            psf_voxels=0.8, dose=300.0, read_noise=0.035, ring_amplitude=0.03, ring_count=8,
        ),
        PhantomStyle(
            "dark",
            "vessels darker than tissue (unfilled lumen), otherwise style A: a test of contrast sign",
            vessel_contrast=-0.30,
        ),
    )
}


def style_of(name: str | PhantomStyle) -> PhantomStyle:
    """The style called ``name`` (a :class:`PhantomStyle` passes through); a one-line error otherwise."""
    if isinstance(name, PhantomStyle):
        return name
    if name not in STYLES:
        raise UserError(f"unknown phantom style {name!r}; choose one of {', '.join(STYLES)}")
    return STYLES[name]


# --------------------------------------------------------------------------------------------
# acquisition steps
# --------------------------------------------------------------------------------------------


def integrate_voxels(fine: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor``^3 blocks: the acquired voxel averages the object over its volume."""
    if factor == 1:
        return fine.astype(np.float32, copy=False)
    z, y, x = (n // factor for n in fine.shape)
    blocks = fine[: z * factor, : y * factor, : x * factor].reshape(z, factor, y, factor, x, factor)
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def shading_field(shape: tuple[int, int, int], rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """``1 + amplitude * f`` with ``f`` a smooth field in [-1, 1] (a few cosines of about the volume's size)."""
    if amplitude == 0:
        return np.ones((1, 1, 1), dtype=np.float32)
    axes = [np.linspace(0.0, 1.0, n, dtype=np.float32) for n in shape]
    z, y, x = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(3):
        k = rng.uniform(0.5, 1.5, 3) * np.pi
        p = rng.uniform(0, 2 * np.pi, 3)
        w = rng.uniform(0.5, 1.0)
        field += np.float32(w) * np.cos(k[0] * z + p[0]) * np.cos(k[1] * y + p[1]) * np.cos(k[2] * x + p[2])
    field /= max(float(np.abs(field).max()), 1e-6)
    return 1.0 + np.float32(amplitude) * field


def ring_pattern(shape: tuple[int, int], rng: np.random.Generator, amplitude: float, count: int) -> np.ndarray:
    """(H, W) additive rings about a rotation axis near the slice centre, signed, about a voxel wide."""
    h, w = shape
    cy, cx = h / 2 + rng.uniform(-0.05, 0.05) * h, w / 2 + rng.uniform(-0.05, 0.05) * w
    r = np.hypot(np.arange(h, dtype=np.float32)[:, None] - cy, np.arange(w, dtype=np.float32)[None, :] - cx)
    rings = np.zeros(shape, dtype=np.float32)
    for radius, sign, width in zip(rng.uniform(3, 0.5 * max(h, w), count), rng.choice([-1.0, 1.0], count), rng.uniform(0.5, 1.5, count)):
        rings += np.float32(sign * amplitude) * np.exp(-0.5 * ((r - radius) / width) ** 2)
    return rings


def acquire(obj_fine: np.ndarray, style: PhantomStyle, voxel_um: float, rng: np.random.Generator) -> np.ndarray:
    """The acquired float32 volume of an object rendered on a grid ``style.oversample`` times finer."""
    gain, offset = rng.uniform(*style.gain_range), rng.uniform(*style.offset_range)
    image = integrate_voxels(obj_fine, style.oversample)
    image *= np.float32(gain)
    image += np.float32(offset)
    image *= shading_field(image.shape, rng, style.shading_amplitude)
    if style.psf_voxels > 0:
        image = ndimage.gaussian_filter(image, style.psf_voxels)
    dose = style.dose * (voxel_um / REFERENCE_VOXEL_UM) ** 2
    photons = rng.poisson(np.clip(image, 0.0, None) * np.float32(dose)).astype(np.float32)
    image = photons / np.float32(dose)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(style.read_noise)
    if style.ring_amplitude > 0:
        image += ring_pattern(image.shape[1:], rng, style.ring_amplitude, style.ring_count)[None]
    return image
