"""The phantom's organ and vessel trees, in physical units (millimetres; origin at the volume corner).

An organ is a deformed bean (:class:`OrganGeometry`, :func:`organ_level`); two vessel trees grow from
its hilum as tapered capsules (:class:`VesselTree`, :func:`grow_vessel_trees`), bending back when a
branch would leave the organ. Grids (:func:`grid_axes`, :func:`grid_shape`) place voxels on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.data.phantom.specs import SizePreset

MIN_VESSEL_RADIUS_MM = 0.03
PIECES_PER_BRANCH = 3


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
