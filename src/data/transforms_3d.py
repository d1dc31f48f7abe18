"""Intensity augmentation of 3-D crops (``data.aug`` of ``configs/data/volume3d.yaml``), with MONAI.

``d4`` is the recipe: only the geometric quarter turns and flips of :func:`src.data.datamodule_3d.d4_3d`,
no intensity change. ``robust`` adds, after them, what a test kidney from another scan changes, the 3-D
counterpart of the 2-D scheme ``robust`` (:func:`src.data.transforms.acquisition_shift`): a wide
contrast / brightness or gamma change (the per-volume percentile window fixes only two quantiles), a
smooth multiplicative shading (bias field), Gaussian noise of a random level, and a random blur or
sharpening (another point-spread function or voxel size). The result is clipped to [0, 1], the range
of a normalised volume at inference.

Every random draw comes from one seed per crop taken from the dataset's generator, so a run's crops
follow its seed (and each DataLoader worker's reseeded generator) like the geometric augmentation.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import (
    Compose,
    Identity,
    OneOf,
    RandAdjustContrast,
    RandBiasField,
    RandGaussianNoise,
    RandGaussianSharpen,
    RandGaussianSmooth,
    RandScaleIntensity,
    RandShiftIntensity,
)

from src.utils.options import look_up

SCHEMES_3D = ("d4", "robust")


def acquisition_shift_3d() -> Compose:
    """The ``robust`` intensity transforms, on a channel-first (1, d, h, w) float array."""
    return Compose([
        OneOf([
            Compose([RandScaleIntensity(factors=0.4, prob=1.0), RandShiftIntensity(offsets=0.25, prob=1.0)]),
            RandAdjustContrast(gamma=(0.6, 1.6), prob=1.0),
            Identity(),
        ], weights=[0.4, 0.4, 0.2]),
        RandBiasField(degree=2, coeff_range=(0.0, 0.15), prob=0.3),
        RandGaussianNoise(std=0.12, prob=0.6),
        OneOf([
            RandGaussianSmooth(sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2), sigma_z=(0.3, 1.2), prob=1.0),
            RandGaussianSharpen(alpha=(2.0, 8.0), prob=1.0),
            Identity(),
        ], weights=[0.2, 0.2, 0.6]),
    ])


class IntensityAugmentation3D:
    """``scheme`` (``d4``: nothing; ``robust``: :func:`acquisition_shift_3d`) applied to a (d, h, w) crop."""

    def __init__(self, scheme: str):
        self.scheme = look_up(scheme, SCHEMES_3D, "data.aug")
        self.transform = acquisition_shift_3d() if scheme == "robust" else None

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.transform is None:
            return image
        self.transform.set_random_state(seed=int(rng.integers(2**31)))
        out = np.asarray(self.transform(image[None].astype(np.float32, copy=False)), dtype=np.float32)[0]
        return np.clip(out, 0.0, 1.0, out=out)
