"""Oblique 2.5-D stacks: slices of a randomly rotated volume, sampled straight from the memory map.

The 1st place of the SenNet + HOA competition trained its 2.5-D models on slices of the volume after
a random 3-D rotation. Rotating a whole (Z, H, W) volume per sample is out of the question; this
module instead interpolates only the ``size x size x channels`` points of one rotated stack.

Coordinates are voxel indices in the volume's (z, y, x) order. For a rotation ``R`` (3x3, acting on
(z, y, x) column vectors) and a centre ``(cz, cy, cx)``, channel ``k`` (offset ``c = k - channels // 2``),
row ``i`` and column ``j`` of the stack sample the point::

    centre + R @ [c * spacing, i - (size - 1) / 2, j - (size - 1) / 2]

so the first column of ``R`` is the stack's normal (the channel direction), the second its row (down)
direction and the third its column (right) direction. The identity reproduces
:func:`src.data.dataset_2d.stack_slices` exactly: ``stack_slices(volume, z, channels, (y0, x0, size))``
equals ``oblique_stack(volume, None, (z, y0 + (size - 1) / 2, x0 + (size - 1) / 2), np.eye(3), size,
channels)[0]`` (see :func:`window_centre`).

Interpolation is trilinear on the raw intensities, with every voxel outside the volume taken to hold
the image's low percentile (``image.stats[0]``, which normalises to exactly 0): points outside read 0
after normalisation, like the zero channels ``stack_slices`` gives beyond the ends of the volume, and
a point half a voxel outside a voxel of raw value ``v`` reads ``normalise((v + low) / 2)``, half of
its neighbour's unclipped normalised value (interpolation
continues across the border, as scipy's ``map_coordinates(mode="grid-constant")``; scipy's
``mode="constant"`` instead drops every point outside ``[0, n - 1]`` to the constant). Labels are
interpolated the same way on the centre channel's plane only (outside = 0) and thresholded.

Reading. The stack's points lie on ``channels`` thin planes; their bounding box in the volume is small
for small angles and huge for oblique ones (up to ~600 x 724 x 724 voxels, 600 MB, for a 512 stack in a
kidney). :func:`oblique_stack` therefore either

* ``"box"``: copies the bounding box of the needed voxels with :func:`~src.data.volumes.read_region`
  (contiguous rows, pages released as it goes) and interpolates from the copy; or
* ``"gather"``: gathers the 8 trilinear corners of every point with ``np.take`` on the flattened memory
  map (one random access per corner, no copy of anything but the points), then releases the mapped
  pages it touched (a 512 oblique plane faults in pages all over the volume).

``method="auto"`` takes the box when it is under :data:`BOX_MAX_BYTES` and holds at most
:data:`BOX_VOXELS_PER_POINT` voxels per sampled point, else gathers; the result is the same either
way. Measured on the 2-core development machine (page-cached 600 x 1303 x 912 uint16 memory map,
3 channels plus the label, median of 12 samples, ``method`` forced): the interpolation costs about
the same from the copy as from the map (about 25 ns per point, :data:`CHUNK_POINTS` at a time), so
the box's copy (about 0.3 ms per MB) is pure overhead that grows with the angle:

=========  ===================  ==========  ==========
512 stack  box (voxels/point)   box         gather
=========  ===================  ==========  ==========
0 deg      2 MB (1.3)           27.9 ms     27.7 ms
3 deg      7 MB (4.3)           30.2 ms     29.0 ms
10 deg     18 MB (11.5)         33.4 ms     30.1 ms
30 deg     57 MB (36)           49.2 ms     36.4 ms
uniform    220 MB (140)         109.5 ms    50.1 ms
=========  ===================  ==========  ==========

(256 stacks: 12-13 ms either way up to 10 degrees, uniform 33 ms against 14 ms.) The box is kept for
nearly axis-aligned stacks, where it costs the same and reads whole rows: it maps only the box's
pages and reads sequentially from a volume that is not in the page cache.

Memory: the box path holds at most :data:`BOX_MAX_BYTES` of copy. The gather path allocates only
per-point arrays (peak about 24 bytes per point, 19 MB for 512 x 512 x 3), but its page faults map
clean page-cache pages all over the volume into the process (fault-around: one 512 oblique stack
mapped 1.3 GB of a 1.4 GB volume), so it drops them with :func:`~src.data.volumes.release_pages`
right after. Both assume the volume is in the page cache: from a cold disk an oblique stack reads
pages all over the file.
"""

from __future__ import annotations

import numpy as np

from src.data.volumes import Volume, read_region, release_pages

BOX_MAX_BYTES = 64 * 2**20  # never copy a bounding box larger than this (memory bound per sample)
BOX_VOXELS_PER_POINT = 4.0  # box copy only when it holds at most this many voxels per sampled point (measured)
METHODS = ("auto", "box", "gather")


def random_rotation(rng: np.random.Generator, max_angle_deg: float = 180.0) -> np.ndarray:
    """A 3x3 rotation matrix (float64, det +1) drawn with ``rng``.

    ``max_angle_deg >= 180``: uniform over SO(3) (Haar measure, scipy's ``Rotation.random`` seeded from
    ``rng``). Otherwise: an axis uniform on the sphere and an angle uniform in
    ``[-max_angle_deg, max_angle_deg]`` degrees about it (``0`` gives the identity).
    """
    from scipy.spatial.transform import Rotation

    if max_angle_deg >= 180.0:
        return Rotation.random(random_state=int(rng.integers(2**32))).as_matrix()
    axis = rng.standard_normal(3)
    axis /= max(float(np.linalg.norm(axis)), 1e-12)
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg)) if max_angle_deg > 0 else 0.0
    return Rotation.from_rotvec(axis * angle).as_matrix()


def window_centre(index: int, window: tuple[int, int, int]) -> tuple[float, float, float]:
    """The centre ``(z, y, x)`` whose identity stack is ``stack_slices(volume, index, channels, window)``
    for ``window = (y0, x0, size)`` (e.g. from :func:`~src.data.dataset_2d.crop_window`)."""
    y0, x0, size = window
    half = (size - 1) / 2.0
    return float(index), y0 + half, x0 + half


def sample_points(centre, rotation: np.ndarray, size: int, channels: int, spacing: float = 1.0) -> np.ndarray:
    """(3, channels, size, size) float32 (z, y, x) voxel coordinates of the stack's points: element
    ``[:, k, i, j]`` is channel ``k``, row ``i``, column ``j`` (see the module doc)."""
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation must be 3x3, got shape {rot.shape}")
    half = (size - 1) / 2.0
    c = (np.arange(channels) - channels // 2) * float(spacing)
    u = np.arange(size) - half
    out = np.empty((3, channels, size, size), dtype=np.float32)
    for k in range(3):
        # per-axis terms in float64 (exact for the identity and integer/half-integer centres), summed in float32
        rows = float(centre[k]) + rot[k, 1] * u[:, None] + rot[k, 0] * c[None, :]  # (size, channels)
        rows = rows.astype(np.float32)
        cols = (rot[k, 2] * u).astype(np.float32)
        np.add(rows.T[:, :, None], cols[None, None, :], out=out[k])
    return out


def _axis_weights(p: np.ndarray, n: int, b: np.ndarray, u0: np.ndarray, u1: np.ndarray, t: np.ndarray) -> None:
    """Base voxel ``b`` (intp) and the weights ``u0``, ``u1`` (float32) of voxels ``b`` and ``b + 1`` in
    the trilinear sum along one axis of length ``n``, written into the given arrays (``t``: scratch).

    ``b = clip(floor(p), 0, n - 2)`` keeps both voxels inside (``n >= 2``); the weights are the tent
    ``max(0, 1 - |p - q|)`` of each voxel ``q``, which is the usual ``1 - f`` / ``f`` inside and gives
    a corner outside ``[0, n - 1]`` no weight (its share goes to the pad value). ``n == 1``: ``u1 = 0``.
    """
    one, zero = np.float32(1.0), np.float32(0.0)
    np.clip(p, zero, np.float32(max(n - 2, 0)), out=t)
    np.floor(t, out=t)
    np.copyto(b, t, casting="unsafe")  # exact: small non-negative integers
    np.subtract(p, t, out=t)  # p - b
    np.abs(t, out=u0)
    np.subtract(one, u0, out=u0)
    np.maximum(u0, zero, out=u0)
    if n < 2:
        u1.fill(0.0)
        return
    np.subtract(t, one, out=u1)
    np.abs(u1, out=u1)
    np.subtract(one, u1, out=u1)
    np.maximum(u1, zero, out=u1)


CHUNK_POINTS = 16384  # points interpolated at a time: the scratch arrays stay in the CPU cache (1.5x faster)


def trilinear(arr: np.ndarray, points: np.ndarray, pad: float = 0.0) -> np.ndarray:
    """Trilinear interpolation of the 3-D array ``arr`` (in memory or a memory map) at ``points``
    ((3, ...) voxel coordinates relative to ``arr[0, 0, 0]``), voxels outside ``arr`` holding ``pad``.

    Float32 result of shape ``points.shape[1:]``. Reads only the 8 corner voxels of every point (one
    ``np.take`` per corner on the flattened array when ``arr`` is C-contiguous, fancy indexing otherwise),
    :data:`CHUNK_POINTS` points at a time.
    """
    points = np.asarray(points, dtype=np.float32)
    flat_points = points.reshape(3, -1)
    total = flat_points.shape[1]
    out = np.empty(total, dtype=np.float32)
    n = min(CHUNK_POINTS, total)
    shape = arr.shape
    contiguous = arr.flags.c_contiguous
    flat = arr.reshape(-1) if contiguous else None  # a view (a memmap stays a memmap)
    b = [np.empty(n, np.intp) for _ in range(3)]
    u = [(np.empty(n, np.float32), np.empty(n, np.float32)) for _ in range(3)]
    t, w, wzy = (np.empty(n, np.float32) for _ in range(3))
    base, idx = np.empty(n, np.intp), np.empty(n, np.intp)
    v = np.empty(n, arr.dtype)
    corners = [(dz, dy) for dz in (0, 1) for dy in (0, 1) if (shape[0] > 1 or not dz) and (shape[1] > 1 or not dy)]
    dxs = (0, 1) if shape[2] > 1 else (0,)
    for start in range(0, total, n):
        m = min(n, total - start)
        o = out[start : start + m]
        bk = [x[:m] for x in b]
        uk = [(u0[:m], u1[:m]) for u0, u1 in u]
        tk, wk, wzyk, basek, idxk, vk = t[:m], w[:m], wzy[:m], base[:m], idx[:m], v[:m]
        for k in range(3):
            _axis_weights(flat_points[k, start : start + m], shape[k], bk[k], *uk[k], tk)
        if contiguous:
            np.multiply(bk[0], shape[1] * shape[2], out=basek)
            np.multiply(bk[1], shape[2], out=idxk)
            basek += idxk
            basek += bk[2]
        o.fill(0.0)
        for dz, dy in corners:
            np.multiply(uk[0][dz], uk[1][dy], out=wzyk)
            for dx in dxs:
                if contiguous:
                    np.add(basek, (dz * shape[1] + dy) * shape[2] + dx, out=idxk)
                    np.take(flat, idxk, out=vk, mode="clip")  # every index is inside: clip only skips the check
                else:
                    vk = arr[bk[0] + dz, bk[1] + dy, bk[2] + dx]
                np.multiply(wzyk, uk[2][dx], out=wk)
                wk *= vk
                o += wk
        if pad:
            inside = uk[0][0]  # total weight on voxels inside arr, then its complement times pad
            inside += uk[0][1]
            np.add(uk[1][0], uk[1][1], out=tk)
            inside *= tk
            np.add(uk[2][0], uk[2][1], out=tk)
            inside *= tk
            np.subtract(np.float32(1.0), inside, out=inside)
            inside *= np.float32(pad)
            o += inside
    return out.reshape(points.shape[1:])


def _needed_box(points: np.ndarray, shape) -> tuple[slice, slice, slice] | None:
    """The smallest box of ``shape`` holding every voxel with weight at some point (None when empty)."""
    box = []
    for k, n in enumerate(shape):
        lo = int(np.floor(points[k].min()))
        hi = int(np.floor(points[k].max())) + 2  # exclusive: voxel floor(p) + 1
        lo, hi = max(lo, 0), min(hi, n)
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
    return tuple(box)  # type: ignore[return-value]


def _choose(box, n_points: int, itemsize: int, method: str) -> str:
    if method != "auto":
        return method
    voxels = int(np.prod([s.stop - s.start for s in box]))
    if voxels * itemsize <= BOX_MAX_BYTES and voxels <= BOX_VOXELS_PER_POINT * n_points:
        return "box"
    return "gather"


def _interpolate(data: np.ndarray, points: np.ndarray, box, how: str, pad: float) -> np.ndarray:
    if box is None:
        return np.full(points.shape[1:], pad, dtype=np.float32)
    if how == "box":
        block = read_region(data, box)
        origin = np.array([s.start for s in box], dtype=np.float32).reshape(3, *([1] * (points.ndim - 1)))
        return trilinear(block, points - origin, pad)
    out = trilinear(data, points, pad)
    release_pages(data)
    return out


def oblique_stack(
    image: Volume,
    label: Volume | None,
    centre,
    rotation: np.ndarray,
    size: int,
    channels: int,
    threshold: int = 127,
    spacing: float = 1.0,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray | None]:
    """A rotated 2.5-D stack and its centre label, interpolated from the (memory-mapped) volumes.

    ``centre``: (z, y, x) voxel coordinates (floats) of the stack's centre; ``rotation``: 3x3 (e.g. from
    :func:`random_rotation`); point of channel ``k``, row ``i``, column ``j``:
    ``centre + rotation @ [(k - channels // 2) * spacing, i - (size - 1) / 2, j - (size - 1) / 2]``.

    Returns ``(image, mask)``: image (size, size, channels) float32, trilinear on raw intensities then
    ``image.normalise`` (clipped to [0, 1]; outside the volume 0); mask (size, size) uint8 0/1, the raw
    label trilinearly interpolated on channel ``channels // 2``'s plane (outside 0) and ``> threshold``,
    or None without a label volume. ``method``: ``"auto"``, ``"box"`` or ``"gather"`` (module doc); the
    result does not depend on it (a forced ``"box"`` copies the box whatever its size: for tests and
    measurements).

    From ``TrainSlices._cropped`` (``y0, x0`` from ``crop_window``, ``aug.size`` the crop)::

        rotation = random_rotation(self.rng, max_angle_deg)
        centre = window_centre(z, (y0, x0, aug.size))
        image, mask = oblique_stack(source.image, source.label, centre, rotation, aug.size,
                                    self.in_channels, source.threshold)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if size < 1 or channels < 1:
        raise ValueError(f"size and channels must be positive, got {size} and {channels}")
    if image.stats is None:
        raise ValueError(f"{image.folder}: image volume without normalisation statistics")
    if label is not None and label.shape != image.shape:
        raise ValueError(f"label volume {label.shape} and image volume {image.shape} differ in shape")
    points = sample_points(centre, rotation, size, channels, spacing)
    box = _needed_box(points, image.shape)
    how = _choose(box, points[0].size, image.data.dtype.itemsize, method) if box is not None else "box"
    raw = _interpolate(image.data, points, box, how, float(image.stats[0]))
    stack = np.ascontiguousarray(image.normalise(raw).transpose(1, 2, 0))  # (size, size, channels) like stack_slices
    if label is None:
        return stack, None
    plane = points[:, channels // 2]
    pbox = _needed_box(plane, label.shape)
    how = _choose(pbox, plane[0].size, label.data.dtype.itemsize, method) if pbox is not None else "box"
    lab = _interpolate(label.data, plane, pbox, how, 0.0)
    return stack, (lab > threshold).astype(np.uint8)
