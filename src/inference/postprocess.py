"""Post-processing of a probability (or blended score) volume larger than RAM, in z-chunks.

Every function reads its (Z, H, W) input, typically a float16 memory map, a few z-slices at a time and
writes its output the same way, so resident memory is a few chunks whatever the size of the volume:

* :func:`top_fraction_threshold`: the threshold that keeps about a given fraction of the voxels (the
  2nd place's "top 0.2 %"), from a histogram streamed over z-chunks;
* :func:`remove_small_components`: drops 3-D connected components smaller than a size, exactly as
  labelling the whole volume would (slabs are labelled separately, their labels joined across slab
  boundaries by union-find, sizes accumulated per component);
* :func:`postprocess_volume`: thresholding (fixed or top fraction) and component filtering in one call.

Comparisons ``score > t`` are exact: the threshold is converted to the largest value of the score's
dtype not above ``t`` (so a float16 volume is compared without rounding ``t`` to float16).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from src.data.volumes import release_pages
from src.utils.errors import UserError
from src.utils.options import look_up

THRESHOLD_MODES = ("fixed", "top_fraction")
CONNECTIVITIES = {6: 1, 18: 2, 26: 3}  # connectivity -> rank of scipy's generate_binary_structure
BLOCK_VOXELS = 1 << 22  # histogram work is done on blocks of at most this many voxels


# --------------------------------------------------------------------------- helpers


def _chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive runs of ``chunk`` indices covering ``range(n)``."""
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


def _check_chunk(chunk: int, name: str = "chunk") -> int:
    if isinstance(chunk, bool) or int(chunk) != chunk or chunk < 1:
        raise UserError(f"{name} must be a positive integer, got {chunk!r}")
    return int(chunk)


def _done_with(arr: np.ndarray) -> None:
    """Flush a written memory map and drop its resident pages (no-op for in-memory arrays)."""
    if isinstance(arr, np.memmap) and arr.mode != "r":
        arr.flush()
    release_pages(arr)


def _make_out(out: np.ndarray | None, shape: tuple[int, ...], name: str = "out") -> np.ndarray:
    """``out`` checked against ``shape`` (uint8), or a new in-memory uint8 array."""
    if out is None:
        return np.zeros(shape, np.uint8)
    if tuple(out.shape) != tuple(shape):
        raise UserError(f"{name} has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if out.dtype != np.uint8:
        raise UserError(f"{name} must be a uint8 array, got {out.dtype}")
    return out


def below_or_equal(dtype: np.dtype, t: float):
    """The largest value ``d`` of ``dtype`` with ``d <= t``, so that ``v > t  <=>  v > d`` for every
    value ``v`` of that dtype (an exact comparison without converting the volume)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        return _int_below_or_equal(dtype, t)
    if not np.issubdtype(dtype, np.floating):
        raise UserError(f"cannot threshold a volume of dtype {dtype}")
    with np.errstate(over="ignore"):
        d = dtype.type(t)
    if float(d) > t:
        d = np.nextafter(d, dtype.type(-np.inf))
    return d


def _int_below_or_equal(dtype: np.dtype, t: float):
    """:func:`below_or_equal` for integer dtypes (``floor(t)``, saturated to the dtype's range)."""
    info = np.iinfo(dtype)
    if t < info.min:  # every value is above t: compare in a wider type with min - 1
        return np.int64(info.min) - 1
    return dtype.type(min(int(np.floor(t)), info.max))


def threshold_chunk(chunk: np.ndarray, t: float) -> np.ndarray:
    """``chunk > t`` as a bool array, exact for any dtype of ``chunk`` (see :func:`below_or_equal`)."""
    chunk = np.asarray(chunk)
    if chunk.dtype == np.bool_:
        chunk = chunk.view(np.uint8)
    return chunk > below_or_equal(chunk.dtype, t)


# --------------------------------------------------------------------------- top fraction


def _check_range(value_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise UserError(f"value_range must be a pair (low, high), got {value_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise UserError(f"value_range must be two finite numbers with low < high, got {value_range!r}")
    return lo, hi


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """float32 where it holds every value of ``dtype`` exactly, float64 otherwise."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or dtype.itemsize <= 2 or dtype == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _bin_counts(values: np.ndarray, edges_w: np.ndarray, lo: float, inv_width: float) -> np.ndarray:
    """Counts of ``j(v)`` = the number of edges strictly below ``v``, for values within the edges' range.

    ``edges_w`` are the edges rounded down to the values' dtype (:func:`below_or_equal`), so
    ``v > edges_w[k]`` is exactly ``v > edge_k``. ``j`` is first estimated arithmetically, then
    corrected by comparisons, so the counts are exact whatever the rounding of the estimate.
    """
    bins = len(edges_w) - 1
    j = np.ceil((values - values.dtype.type(lo)) * values.dtype.type(inv_width))
    j = np.clip(j, 0, bins).astype(np.intp)
    while True:  # at most a step or two: the arithmetic estimate is off by rounding only
        down = (j > 0) & (values <= edges_w[np.maximum(j - 1, 0)])
        up = (j < bins) & (values > edges_w[j])
        if not (down.any() or up.any()):
            break
        j -= down
        j += up
    return np.bincount(j, minlength=bins + 1)


def top_fraction_threshold(score: np.ndarray, fraction: float, chunk: int = 32, bins: int = 4096,
                           value_range: tuple[float, float] = (0.0, 1.0)) -> float:
    """The threshold ``t`` such that about ``fraction`` of the voxels satisfy ``score > t``.

    ``t`` is one of the edges ``low + k * (high - low) / bins`` (k = 0..bins) of a histogram of the
    score streamed over z-chunks of ``chunk`` slices, or ``low - (high - low) / bins``; the edge
    chosen is the one whose count of voxels above it is closest to ``fraction * score.size`` (the
    highest such edge on ties). The count above the returned ``t`` is exact; ``t`` itself is within
    one bin, ``(high - low) / bins`` (1/4096 by default), of the exact quantile. ``fraction`` 0
    returns ``high`` (nothing above it), 1 returns an edge below every voxel. Every value must lie
    within ``value_range`` (blended scores need e.g. ``(0, 2)``); NaN or values outside it are an error.

    Compare with ``score > np.float64(t)`` or :func:`threshold_chunk`: with NumPy 2, ``score > t`` on a
    float16 array rounds ``t`` to float16 (harmless for the default ranges, whose edges are float16).
    """
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise UserError(f"fraction must be a number between 0 and 1, got {fraction!r}") from None
    if not 0.0 <= fraction <= 1.0:
        raise UserError(f"fraction must be between 0 and 1, got {fraction!r}")
    chunk = _check_chunk(chunk)
    bins = _check_chunk(bins, "bins")
    lo, hi = _check_range(value_range)
    if fraction == 0.0:
        return hi
    edges = np.linspace(lo, hi, bins + 1)
    work = _work_dtype(score.dtype)
    edges_w = np.array([below_or_equal(work, e) for e in edges], dtype=work)
    inv_width = bins / (hi - lo)
    counts = np.zeros(bins + 1, np.int64)
    n_total = int(score.size)
    for z0, z1 in _chunks(score.shape[0], chunk):
        block = np.asarray(score[z0:z1])
        if block.size:
            low, high = block.min(), block.max()  # NaN propagates and fails both comparisons
            if not (float(low) >= lo and float(high) <= hi):
                raise UserError(f"score values span [{float(low)}, {float(high)}] in slices {z0}..{z1 - 1}, outside "
                                f"value_range ({lo}, {hi}); pass a value_range that covers the scores")
            flat = block.reshape(-1)
            for b0 in range(0, flat.size, BLOCK_VOXELS):
                counts += _bin_counts(flat[b0:b0 + BLOCK_VOXELS].astype(work), edges_w, lo, inv_width)
        release_pages(score)
    # above[k + 1] = voxels above edge k (k = -1..bins), edge -1 being lo - width (below every voxel)
    above = np.concatenate([[n_total], n_total - np.cumsum(counts)])
    candidates = np.concatenate([[lo - (hi - lo) / bins], edges])
    error = np.abs(above - fraction * n_total)
    best = int(np.flatnonzero(error == error.min())[-1])
    return float(candidates[best])


# --------------------------------------------------------------------------- connected components


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in CONNECTIVITIES:
        raise UserError(f"connectivity must be one of {', '.join(map(str, CONNECTIVITIES))}, got {connectivity!r}")
    return ndimage.generate_binary_structure(3, CONNECTIVITIES[connectivity])


def _boundary_pairs(prev: np.ndarray, cur: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Unique (label, label) pairs of foreground voxels touching across a slab boundary.

    ``prev`` is the last plane of a slab, ``cur`` the first of the next (global labels, 0 background);
    voxel (y, x) of ``prev`` touches (y + dy, x + dx) of ``cur`` where ``structure[2, 1 + dy, 1 + dx]``.
    """
    h, w = prev.shape
    pairs = []
    for dy, dx in np.argwhere(structure[2]) - 1:
        a = prev[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
        b = cur[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
        both = (a > 0) & (b > 0)
        if both.any():
            pairs.append(np.stack([a[both], b[both]], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs).astype(np.int64), axis=0)


def _label_slab(mask: np.ndarray, z0: int, z1: int, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """Deterministic labels (int32, 0 background) of slices ``z0..z1-1`` and their count."""
    slab = np.asarray(mask[z0:z1]) != 0
    release_pages(mask)
    labels, n = ndimage.label(slab, structure=structure)
    return labels, int(n)


def _copy_binary(mask: np.ndarray, out: np.ndarray, chunk: int) -> np.ndarray:
    for z0, z1 in _chunks(mask.shape[0], chunk):
        out[z0:z1] = np.asarray(mask[z0:z1]) != 0
        release_pages(mask)
        _done_with(out)
    return out


def remove_small_components(mask: np.ndarray, min_size: int, out: np.ndarray | None = None, chunk: int = 64,
                            connectivity: int = 26) -> np.ndarray:
    """Remove the 3-D connected components of fewer than ``min_size`` voxels from a (Z, H, W) mask.

    ``mask`` (bool or any integer dtype, nonzero = foreground; may be a memory map) is read in slabs of
    ``chunk`` slices; the result, 0/1, goes to ``out`` (a uint8 array or memory map of the same shape,
    which may be ``mask`` itself) or to a new in-memory array. ``connectivity`` is 6 (faces), 18 (and
    edges) or 26 (and corners). The result is identical to labelling the whole volume with
    ``scipy.ndimage.label`` and dropping small components:

    1. each slab is labelled on its own, its labels shifted by a global offset, and the sizes of its
       labels recorded; labels that touch across a slab boundary (last plane of one slab against the
       first of the next, diagonal neighbours included as the connectivity says) are paired;
    2. the deduplicated pairs join labels into components (union-find, done by scipy's compiled
       ``connected_components`` on the label graph), whose sizes are the sums of their labels' sizes;
    3. each slab is labelled again (the same deterministic labelling) and its voxels kept where their
       component is large enough.

    Memory: a slab's mask and int32 labels (``chunk * H * W * 5`` bytes) and a few integers per label.
    ``min_size`` <= 1 removes nothing (the mask is copied into ``out`` as 0/1).
    """
    if mask.ndim != 3:
        raise UserError(f"mask must be a (Z, H, W) volume, got shape {tuple(mask.shape)}")
    chunk = _check_chunk(chunk)
    structure = _structure(connectivity)
    out = _make_out(out, mask.shape)
    if min_size <= 1:
        return _copy_binary(mask, out, chunk)
    slabs = list(_chunks(mask.shape[0], chunk))
    sizes = [np.zeros(1, np.int64)]  # global label 0 is background
    offsets, pairs = [], []
    offset, last_plane = 0, None
    for z0, z1 in slabs:  # pass 1: label slabs, record sizes and boundary pairs
        labels, n = _label_slab(mask, z0, z1, structure)
        sizes.append(np.bincount(labels.reshape(-1), minlength=n + 1)[1:].astype(np.int64))
        first = labels[0].astype(np.int64)
        first[first > 0] += offset
        if last_plane is not None:
            pairs.append(_boundary_pairs(last_plane, first, structure))
        last_plane = labels[-1].astype(np.int64)
        last_plane[last_plane > 0] += offset
        offsets.append(offset)
        offset += n
        del labels
    sizes = np.concatenate(sizes)
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(offset + 1, offset + 1))
    _, component = connected_components(graph, directed=False)
    component_size = np.bincount(component, weights=sizes).astype(np.int64)
    keep = component_size[component] >= min_size
    keep[0] = False
    for (z0, z1), start in zip(slabs, offsets):  # pass 2: relabel, keep large components
        labels, n = _label_slab(mask, z0, z1, structure)
        table = keep[start:start + n + 1].copy()
        table[0] = False  # local label 0 is background (global label `start` belongs to the previous slab)
        out[z0:z1] = table[labels]
        _done_with(out)
        del labels
    return out


# --------------------------------------------------------------------------- the whole step


def postprocess_volume(score: np.ndarray, threshold_mode: str = "fixed", threshold: float = 0.5,
                       top_fraction: float = 0.002, min_component_size: int = 0, out: np.ndarray | None = None,
                       chunk: int = 32, value_range: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, float]:
    """Threshold a (Z, H, W) score volume into a 0/1 uint8 mask and drop small 3-D components.

    ``threshold_mode`` ``"fixed"`` uses ``score > threshold``; ``"top_fraction"`` keeps about
    ``top_fraction`` of the voxels (:func:`top_fraction_threshold`, with ``value_range``). Components
    of fewer than ``min_component_size`` voxels are removed (26-connectivity) when it is above 0.
    ``out`` is a uint8 array of the score's shape (e.g. ``np.lib.format.open_memmap(..., mode="w+")``)
    or None for a new in-memory one; everything runs in z-chunks of ``chunk`` slices.
    Returns (mask, threshold used).
    """
    look_up(threshold_mode, THRESHOLD_MODES, "threshold_mode")
    if score.ndim != 3:
        raise UserError(f"score must be a (Z, H, W) volume, got shape {tuple(score.shape)}")
    chunk = _check_chunk(chunk)
    if threshold_mode == "top_fraction":
        t = top_fraction_threshold(score, top_fraction, chunk=chunk, value_range=value_range)
    else:
        try:
            t = float(threshold)
        except (TypeError, ValueError):
            raise UserError(f"threshold must be a number, got {threshold!r}") from None
        if np.isnan(t):
            raise UserError("threshold must be a number, got nan")
    out = _make_out(out, score.shape)
    for z0, z1 in _chunks(score.shape[0], chunk):
        out[z0:z1] = threshold_chunk(score[z0:z1], t)
        release_pages(score)
        _done_with(out)
    if min_component_size > 0:
        remove_small_components(out, min_component_size, out=out, chunk=chunk)
    return out, t
