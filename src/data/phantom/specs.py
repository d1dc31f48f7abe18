"""What a phantom build holds: size presets and one spec per kidney, its folders and voxel size from the registry.

The registry (``configs/registry.yaml``) says which volume groups exist, where their slice folders go
and their voxel sizes; a :class:`KidneySpec` adds only what the phantom invents: the physical extent,
the uint16 intensity window, the labelled share of a sparse kidney and the child-seed key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from src.data.registry import Group, Registry
from src.utils.errors import UserError


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
    """One rendered volume: the registry group whose folders it fills, plus what only the phantom knows."""

    name: str  # volume identity (the key of :func:`render_kidney`)
    group: Group  # the registry's group: slice folders, split, voxel size
    extent_mm: tuple[float, float, float]  # physical (Z, H, W) at size "small"
    window: tuple[int, int]  # uint16 values of the 10th and 99.8th intensity percentiles
    labelled_fraction: float | None  # share of vessel voxels labelled; None: labels not written
    seed_key: int
    voxel_um: float  # the group's voxel size unless the phantom renders the kidney at another one
    dense_subset: Group | None = None  # a group of dense labels for a middle run of this kidney's slices

    @property
    def folder(self) -> str:
        """The name of the kidney's folder (``kidney_3_sparse``, ``50um_LADAF-...``)."""
        return PurePosixPath(self.group.root).name

    @property
    def split(self) -> str:
        """The top folder the kidney's folder lives in: ``train``, ``test`` or ``train_ext``."""
        return PurePosixPath(self.group.root).parts[0]


REGISTRY = Registry.load()
HOA_GROUP = "hoa_ladaf_2020_31"
HOA_NAME = PurePosixPath(REGISTRY[HOA_GROUP].root).name  # the external kidney is known by its folder name
# kidney_5 is scanned at 50.28 um (the registry); the phantom's kidney_5 has always been rendered at
# 50 um, and is kept there so that every phantom (and every figure measured on one) stays the same.
PHANTOM_KIDNEY_5_VOXEL_UM = 50.0


def kidney_spec(name: str, group: str, extent_mm: tuple[float, float, float], window: tuple[int, int],
                labelled_fraction: float | None, seed_key: int, voxel_um: float | None = None) -> KidneySpec:
    """The spec of kidney ``name`` filling the registry's ``group`` (its voxel size unless ``voxel_um``)."""
    base = REGISTRY[group]
    dense = [g for g in REGISTRY.base_groups(base.split) if g.images_follow_labels and g.images == base.images]
    return KidneySpec(name, base, extent_mm, window, labelled_fraction, seed_key,
                      base.voxel_um if voxel_um is None else voxel_um, dense[0] if dense else None)


KIDNEYS: dict[str, KidneySpec] = {
    spec.name: spec
    for spec in (
        kidney_spec("kidney_1_dense", "kidney_1_dense", (5.0, 10.15, 8.35), (20243, 29649), 1.0, 1),
        kidney_spec("kidney_2", "kidney_2", (5.5, 8.55, 12.45), (29784, 42380), 0.65, 2),
        kidney_spec("kidney_3", "kidney_3_sparse", (4.5, 12.2, 10.7), (18806, 21944), 0.85, 3),
        kidney_spec("kidney_5", "kidney_5", (4.8, 9.35, 11.45), (24512, 33870), None, 5, voxel_um=PHANTOM_KIDNEY_5_VOXEL_UM),
        kidney_spec("kidney_6", "kidney_6", (4.8, 9.35, 11.45), (26931, 38254), None, 6),
        kidney_spec(HOA_NAME, HOA_GROUP, (5.2, 10.55, 9.05), (15500, 35605), None, 7),
    )
}


def size_preset(size: str) -> SizePreset:
    """The :class:`SizePreset` called ``size``; :class:`UserError` for an unknown name."""
    if size not in SIZES:
        raise UserError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def kidney_extent_mm(spec: KidneySpec, size: str) -> np.ndarray:
    """Physical (Z, H, W) extent of ``spec`` at ``size``."""
    return np.asarray(spec.extent_mm, dtype=np.float64) * size_preset(size).scale


def check_seed(seed: int) -> int:
    """``seed`` as a non-negative int; :class:`UserError` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"phantom seed must be a non-negative integer, got {seed!r}")
    return int(seed)
