"""The volume store: slice folders (tif/jp2/png) as memory-mapped 3-D arrays, built once and cached.

A volume is a folder of single-channel slices named by slice number (``0000.tif``, ``0001.tif``...).
:class:`VolumeStore` reads it once, in numeric order, into a ``.npy`` file that is then opened as a
read-only memory map; later opens reuse the file until the folder changes (file names, sizes or
modification times), when it is rebuilt. The cache is written under a temporary name and renamed when
complete, so an interrupted build is never trusted. Image volumes also carry their normalisation
statistics (the 10th and 99.8th intensity percentiles, exact, from a histogram accumulated while
building), cached with the array.

Every error names the offending file: slices of different shape or dtype, gaps in the numbering,
image and label counts that differ, an unreadable file, an empty folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.utils.errors import UserError
from src.utils.files import atomic_output
from src.utils.progress import track

log = logging.getLogger(__name__)

SLICE_SUFFIXES = (".tif", ".tiff", ".jp2", ".png")
IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
LABEL_DTYPE = np.dtype(np.uint8)
KINDS = ("image", "label", "pseudo")  # pseudo: soft labels round(p * 255), stored as they are
BINARY_SCALE = 255  # a label folder of 0/1 masks is cached as 0/255, the Kaggle labels' values
NORM_PERCENTILES = (10.0, 99.8)
CACHE_VERSION = 1
_STEM = re.compile(r"^\d+$")


# --------------------------------------------------------------------------- slice files


def read_slice(path: Path) -> np.ndarray:
    """Read one single-channel slice (tif via tifffile, jp2 via glymur, png via OpenCV)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        elif suffix == ".jp2":
            import glymur

            arr = glymur.Jp2k(str(path))[:]
        elif suffix == ".png":
            import cv2

            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ValueError("OpenCV could not decode it")
        else:
            raise UserError(f"{path}: unsupported slice format {suffix!r} (expected one of {', '.join(SLICE_SUFFIXES)})")
    except UserError:
        raise
    except Exception as err:  # any decoder failure: name the file, one line
        raise UserError(f"{path}: unreadable slice ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise UserError(f"{path}: expected a single-channel 2-D slice, got shape {arr.shape}")
    return arr


def write_slice(path: Path, arr: np.ndarray) -> None:
    """Write one slice in the format named by ``path``'s suffix (lossless for every format)."""
    path = Path(path)
    suffix = path.suffix.lower()
    arr = np.ascontiguousarray(arr)
    if suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, arr)
    elif suffix == ".jp2":
        import glymur

        # lossless (no compression ratios); small slices need fewer resolution levels than the default 6
        levels = max(1, min(6, int(np.log2(max(1, min(arr.shape[:2])))) ))
        glymur.Jp2k(str(path), data=arr, numres=levels)
    elif suffix == ".png":
        import cv2

        if not cv2.imwrite(str(path), arr):
            raise UserError(f"{path}: OpenCV could not write this slice")
    else:
        raise UserError(f"{path}: unsupported slice format {suffix!r}")


def list_slices(folder: Path) -> list[Path]:
    """Slice files of ``folder`` in numeric order; the numbering must be contiguous."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: slice folder not found")
    files = [p for p in folder.iterdir() if p.suffix.lower() in SLICE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise UserError(f"{folder}: empty slice folder (no {'/'.join(SLICE_SUFFIXES)} files)")
    bad = [p for p in files if not _STEM.match(p.stem)]
    if bad:
        raise UserError(f"{bad[0]}: slice file name is not a slice number (expected e.g. 0000{bad[0].suffix})")
    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) > 1:
        raise UserError(f"{folder}: mixed slice formats {sorted(suffixes)}")
    files.sort(key=lambda p: int(p.stem))
    numbers = np.array([int(p.stem) for p in files])
    steps = np.diff(numbers)
    if (steps == 0).any():
        i = int(np.flatnonzero(steps == 0)[0])
        raise UserError(f"{files[i + 1]}: duplicate slice number {numbers[i]} (also {files[i].name})")
    if (steps != 1).any():
        i = int(np.flatnonzero(steps != 1)[0])
        raise UserError(
            f"{folder}: gap in slice numbering, slice {numbers[i] + 1:04d} is missing (after {files[i].name})"
        )
    return files


def _ordered_map(func: Callable, items: Sequence, workers: int) -> Iterator:
    """``map`` in order over a thread pool, with at most ``2 * workers`` results in flight."""
    if workers <= 1:
        yield from map(func, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# --------------------------------------------------------------------------- statistics


def percentiles_from_histogram(counts: np.ndarray, qs: Iterable[float]) -> tuple[float, ...]:
    """Exact percentiles (numpy's default linear method) of integer data given its histogram."""
    cum = np.cumsum(counts, dtype=np.int64)
    n = int(cum[-1])
    if n == 0:
        raise ValueError("empty histogram")
    out = []
    for q in qs:
        h = (n - 1) * q / 100.0
        lo = int(np.floor(h))
        hi = min(lo + 1, n - 1)
        v_lo = int(np.searchsorted(cum, lo, side="right"))
        v_hi = int(np.searchsorted(cum, hi, side="right"))
        out.append(float(v_lo + (h - lo) * (v_hi - v_lo)))
    return tuple(out)


# --------------------------------------------------------------------------- volumes


@dataclass(frozen=True)
class Volume:
    """A read-only (Z, H, W) memory-mapped volume and where it came from.

    ``first`` is the slice number of ``data[0]``; ``stats`` holds the (low, high) normalisation
    percentiles of the whole source volume (image volumes only; kept by sub-ranges).
    """

    folder: Path
    data: np.ndarray
    first: int
    suffix: str
    stats: tuple[float, float] | None = None
    cache: Path | None = None  # the .npy behind ``data``
    offset: int = 0  # index of data[0] in that file

    def __reduce__(self):
        """Pickle as a reference to the cache file (cheap for DataLoader workers started by spawn)."""
        if self.cache is None:
            return super().__reduce__()
        fields = (self.folder, self.first, self.suffix, self.stats, self.cache, self.offset, len(self))
        return (_reopen, fields)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def numbers(self) -> range:
        return range(self.first, self.first + self.data.shape[0])

    def __len__(self) -> int:
        return self.data.shape[0]

    def slice_path(self, number: int) -> Path:
        return self.folder / f"{number:04d}{self.suffix}"

    def sub(self, first: int, last: int) -> Volume:
        """The slices numbered ``first`` to ``last`` (inclusive), as a view; statistics unchanged."""
        if first < self.first or last >= self.first + len(self) or last < first:
            raise UserError(
                f"{self.folder}: slices {first:04d}-{last:04d} requested, folder holds "
                f"{self.first:04d}-{self.first + len(self) - 1:04d}"
            )
        start = first - self.first
        data = self.data[start : last - self.first + 1]
        return Volume(self.folder, data, first, self.suffix, self.stats, self.cache, self.offset + start)

    def normalise(self, arr: np.ndarray) -> np.ndarray:
        """Min-max normalise with the volume's percentiles and clip to [0, 1] (float32)."""
        if self.stats is None:
            raise ValueError(f"{self.folder}: no normalisation statistics (label volume?)")
        lo, hi = self.stats
        out = (np.asarray(arr, dtype=np.float32) - lo) / max(hi - lo, 1e-6)
        return np.clip(out, 0.0, 1.0, out=out)


def _reopen(folder, first, suffix, stats, cache, offset, length) -> Volume:
    data = np.load(cache, mmap_mode="r")[offset : offset + length]
    return Volume(folder, data, first, suffix, stats, cache, offset)


class VolumeStore:
    """Opens slice folders as memory-mapped volumes, building each cache once.

    ``cache_dir=None`` keeps each cache beside its data (``<parent>/.cache/<folder>.npy``) and falls
    back to ``~/.cache/bvs/volumes`` when that folder is not writable (e.g. a read-only Kaggle input);
    a ``cache_dir`` keeps every cache there, named after the folder's absolute path.
    """

    def __init__(self, cache_dir: str | Path | None = None, workers: int = 2, progress: bool = True):
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.workers = max(1, int(workers))
        self.progress = progress
        self._open: dict[tuple[Path, str], tuple[str, Volume]] = {}

    # -- public -------------------------------------------------------------------------
    def open(self, folder: str | Path, kind: str = "image") -> Volume:
        """Open ``folder`` as a volume; ``kind`` is ``"image"`` (uint8/uint16, with stats), ``"label"`` (uint8
        masks: Kaggle's 0/255, or 0/1, which is cached as 0/255 so every reader's ``> 127`` holds) or
        ``"pseudo"`` (uint8 soft labels ``round(p * 255)``, cached as they are)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        folder = Path(folder).resolve()
        key = (folder, kind)
        files = list_slices(folder)
        fingerprint = _fingerprint(files)
        cached = self._open.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        npy, meta_path = self._cache_paths(folder)
        volume = self._load(folder, npy, meta_path, fingerprint, kind)
        if volume is None:
            volume = self._build(folder, files, npy, meta_path, fingerprint, kind)
        self._open[key] = (fingerprint, volume)
        return volume

    def open_pair(self, images: str | Path, labels: str | Path, images_follow_labels: bool = False,
                  label_kind: str = "label") -> tuple[Volume, Volume]:
        """Open an image folder and its label folder; their slices must correspond one to one.

        With ``images_follow_labels`` the labels may cover a contiguous sub-range of the image slice
        numbers (kidney_3_dense: labels 0496-0996, images in kidney_3_sparse), and the image volume
        returned is the matching view. ``label_kind``: ``"label"`` or ``"pseudo"`` (:meth:`open`; a group's
        :attr:`~src.data.registry.Group.label_kind`).
        """
        image = self.open(images, "image")
        label = self.open(labels, label_kind)
        if images_follow_labels:
            image = image.sub(label.first, label.first + len(label) - 1)
        if len(image) != len(label) or image.first != label.first:
            raise UserError(
                f"{label.folder}: {len(label)} label slices ({label.first:04d}-{label.first + len(label) - 1:04d}) "
                f"but {len(image)} image slices ({image.first:04d}-{image.first + len(image) - 1:04d}) in {image.folder}"
            )
        if image.shape[1:] != label.shape[1:]:
            raise UserError(
                f"{label.folder}: label slices are {label.shape[1]}x{label.shape[2]} "
                f"but image slices are {image.shape[1]}x{image.shape[2]} in {image.folder}"
            )
        return image, label

    # -- cache ----------------------------------------------------------------------------
    def _cache_paths(self, folder: Path) -> tuple[Path, Path]:
        if self.cache_dir is not None:
            base = self.cache_dir
            digest = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
            name = f"{folder.parent.name}_{folder.name}-{digest}"
        else:
            base = folder.parent / ".cache"
            name = folder.name
            if not _writable(base):
                base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bvs" / "volumes"
                digest = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
                name = f"{folder.parent.name}_{folder.name}-{digest}"
        return base / f"{name}.npy", base / f"{name}.json"

    def _load(self, folder: Path, npy: Path, meta_path: Path, fingerprint: str, kind: str) -> Volume | None:
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        stale_labels = kind == "label" and "scaled" not in meta  # written before 0/1 masks were scaled
        if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != fingerprint or meta.get("kind") != kind or stale_labels:
            log.info("cache of %s is stale, rebuilding", folder)
            return None
        try:
            data = np.load(npy, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if list(data.shape) != meta["shape"] or str(data.dtype) != meta["dtype"]:
            return None
        stats = tuple(meta["stats"]) if meta.get("stats") else None
        return Volume(folder, data, int(meta["first"]), meta["suffix"], stats, npy)  # type: ignore[arg-type]

    def _build(self, folder: Path, files: list[Path], npy: Path, meta_path: Path, fingerprint: str, kind: str) -> Volume:
        first = read_slice(files[0])
        shape, dtype = first.shape, first.dtype
        allowed = IMAGE_DTYPES if kind == "image" else (LABEL_DTYPE,)
        if dtype not in allowed:
            raise UserError(f"{files[0]}: {kind} slices must be {' or '.join(map(str, allowed))}, got {dtype}")
        npy.parent.mkdir(parents=True, exist_ok=True)
        counts = np.zeros(int(np.iinfo(dtype).max) + 1, dtype=np.int64)
        with atomic_output(meta_path) as tmp_meta:  # the metadata is the commit point: renamed last
            with atomic_output(npy) as tmp_npy:
                out = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=dtype, shape=(len(files), *shape))
                slices = _ordered_map(read_slice, files, self.workers)
                label = f"caching {folder.parent.name}/{folder.name}"
                for i, (path, arr) in enumerate(track(zip(files, slices), len(files), label, self.progress)):
                    if arr.shape != shape:
                        raise UserError(f"{path}: slice is {arr.shape[0]}x{arr.shape[1]}, "
                                        f"expected {shape[0]}x{shape[1]} like {files[0].name}")
                    if arr.dtype != dtype:
                        raise UserError(f"{path}: slice dtype is {arr.dtype}, expected {dtype} like {files[0].name}")
                    out[i] = arr
                    if (i + 1) % 16 == 0:  # keep the resident part of the new file small
                        out.flush()
                        release_pages(out)
                    counts += np.bincount(arr.ravel(), minlength=counts.size)
                scaled = kind == "label" and is_binary01(counts)
                if scaled:
                    scale_in_place(out, BINARY_SCALE)
                    log.warning("%s: labels are 0/1 masks; read as vessel = 1 (cached as 0/%d like Kaggle's)", folder, BINARY_SCALE)
                out.flush()
                del out
            stats = list(percentiles_from_histogram(counts, NORM_PERCENTILES)) if kind == "image" else None
            meta = {
                "version": CACHE_VERSION,
                "kind": kind,
                "source": str(folder),
                "fingerprint": fingerprint,
                "shape": [len(files), *shape],
                "dtype": str(dtype),
                "first": int(files[0].stem),
                "suffix": files[0].suffix,
                "stats": stats,
                **({"scaled": BINARY_SCALE if scaled else 1} if kind == "label" else {}),
            }
            tmp_meta.write_text(json.dumps(meta, indent=1))
        volume = self._load(folder, npy, meta_path, fingerprint, kind)
        assert volume is not None
        return volume


def is_binary01(counts: np.ndarray) -> bool:
    """Whether a value histogram is that of a 0/1 mask with some 1s (all-zero folders are left alone)."""
    return bool(counts[1] > 0 and counts[2:].sum() == 0)


def scale_in_place(out: np.ndarray, factor: int, run: int = 16) -> None:
    """Multiply a (Z, H, W) memory map by ``factor`` a few slices at a time."""
    for z in range(0, len(out), run):
        out[z : z + run] *= np.asarray(factor, dtype=out.dtype)


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha1()
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _writable(folder: Path) -> bool:
    probe = folder if folder.exists() else folder.parent
    return os.access(probe, os.W_OK)


def slice_shape(path: Path) -> tuple[int, int]:
    """(height, width) of a slice file from its header, without decoding the pixels."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
        elif suffix == ".jp2":
            import glymur

            shape = glymur.Jp2k(str(path)).shape
        elif suffix == ".png":
            with open(path, "rb") as fh:
                head = fh.read(24)
            if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
                raise ValueError("not a PNG file")
            shape = (int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big"))
        else:
            raise UserError(f"{path}: unsupported slice format {suffix!r}")
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{path}: unreadable slice header ({type(err).__name__}: {err})") from None
    return int(shape[0]), int(shape[1])


def _mapping(arr: np.ndarray):
    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def advise_random_access(arr: np.ndarray) -> None:
    """Tell the kernel the mapping behind ``arr`` is read at random places (3-D crops): no read-ahead
    and no fault-around, so a crop maps only the pages it reads."""
    base = _mapping(arr)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_RANDOM"):
        base.madvise(mmap.MADV_RANDOM)


def _row_range(arr: np.ndarray, base: mmap.mmap, first: int, stop: int) -> tuple[int, int]:
    """(page-aligned offset, length) in ``base`` of rows ``first..stop-1`` of the C-contiguous ``arr``."""
    start = arr.ctypes.data - np.frombuffer(base, dtype=np.uint8).ctypes.data + first * arr[0].nbytes
    end = min(len(base), start + (stop - first) * arr[0].nbytes)
    aligned = start - start % mmap.PAGESIZE
    return aligned, max(0, end - aligned)


def release_pages(arr: np.ndarray, rows: tuple[int, int] | None = None) -> None:
    """Drop the resident pages of the file mapping behind ``arr`` (a memmap or a view of one), or only
    those of ``rows`` (first, stop) of a C-contiguous one.

    Clean file-backed pages are simply re-read on the next access, so this only lowers the process's
    resident memory after a pass over a large volume; it is a no-op for ordinary arrays. Releasing
    only the rows just written keeps the cost per block constant (the whole mapping costs time that
    grows with it, and stalls the other threads' page faults meanwhile).
    """
    base = _mapping(arr)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        if rows is None:
            base.madvise(mmap.MADV_DONTNEED)
        else:
            offset, length = _row_range(arr, base, *rows)
            if length:
                base.madvise(mmap.MADV_DONTNEED, offset, length)


def flush_rows(arr: np.ndarray, first: int, stop: int) -> None:
    """Write rows ``first..stop-1`` of a C-contiguous memmap to its file (``arr.flush()`` for a view
    that is not one), without touching the rest of the mapping."""
    base = _mapping(arr)
    if not isinstance(base, mmap.mmap) or not arr.flags.c_contiguous:
        if hasattr(arr, "flush"):
            arr.flush()
        return
    offset, length = _row_range(arr, base, first, stop)
    if length:
        base.flush(offset, length)


READ_RUN_BYTES = 16 * 2**20  # a strided block is read in runs of z-slices of about this size


def read_view_block(data: np.ndarray, order: tuple[int, int, int], start: int, stop: int) -> np.ndarray:
    """Slices ``start..stop-1`` of ``data.transpose(order)`` as one contiguous array.

    For a view across z (``order[0] != 0``) every z-slice of the memory map holds part of the block,
    so the map is read in runs of z-slices and its pages are released after each run: the resident
    memory is the block plus one run, not the whole volume.
    """
    axis = order[0]
    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    if axis == 0:
        block = np.array(data[tuple(index)]).transpose(order)
        release_pages(data)
        return np.ascontiguousarray(block)
    shape = [data.shape[a] for a in order]
    shape[0] = stop - start
    block = np.empty(shape, dtype=data.dtype)
    in_volume_order = block.transpose(np.argsort(order))  # a (Z, h, w) view of the block
    run = max(1, READ_RUN_BYTES // max(1, data[0].nbytes))
    for z0 in range(0, data.shape[0], run):
        index[0] = slice(z0, z0 + run)
        in_volume_order[z0 : z0 + run] = data[tuple(index)]
        release_pages(data)
    return block


def read_region(data: np.ndarray, region: tuple[slice, slice, slice], run: int = 16) -> np.ndarray:
    """A copy of ``data[region]`` read ``run`` z-slices at a time, releasing the mapped pages after
    each run: a crop from a large memory map touches pages all over it, and they would otherwise
    stay resident (hundreds of MB for one 192^3 crop of a real kidney)."""
    start, stop, _ = region[0].indices(data.shape[0])
    out = np.empty((max(0, stop - start), *(len(range(*r.indices(n))) for r, n in zip(region[1:], data.shape[1:]))), data.dtype)
    for z0 in range(start, stop, run):
        z1 = min(stop, z0 + run)
        out[z0 - start : z1 - start] = data[(slice(z0, z1), *region[1:])]
        release_pages(data)
    return out
