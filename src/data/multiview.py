"""Multiview projections: a (Z, H, W) volume re-sliced along its other two axes, as slice folders.

``<root>_xz`` holds ``v.transpose(1, 2, 0)`` (H slices of W x Z) and ``<root>_zy`` holds
``v.transpose(2, 0, 1)`` (W slices of Z x H), images and labels, in the source's file formats.
The volume is read from the memory-mapped store in blocks of output slices bounded by
``block_bytes`` (default a quarter of the volume), releasing mapped pages as it goes, so peak memory
is about a quarter of the volume plus a few slices rather than the whole volume.
Each projection is written to a temporary folder and renamed when complete: an existing output folder
is always complete and is skipped (``force`` rebuilds it), unless its labels are generated ones that
have changed since: a projection copies the record of what wrote its labels (``<labels>_source.json``,
:func:`src.data.registry.labels_source_path`: pseudo labels) and is rebuilt when the record differs.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.data.registry import VIEW_AXES, Group, Registry, labels_source_path
from src.data.volumes import Volume, VolumeStore, read_view_block, write_slice
from src.utils.errors import UserError
from src.utils.files import atomic_output, sweep_stale, write_text_atomic
from src.utils.progress import track

BLOCK_FRACTION = 0.25  # default block of output slices: a quarter of the volume


def _blocks(volume: np.ndarray, view: str, block_bytes: int | None = None):
    """Yield (index, slice) of ``volume`` re-sliced for ``view`` (``xz`` or ``zy``), assembled a block
    of output slices at a time (``block_bytes``, default a quarter of the volume) by
    :func:`read_view_block`, so the resident memory is one block plus one run of z-slices."""
    order = VIEW_AXES[view]
    if order[0] == 0:
        raise ValueError("the z view is the volume itself")
    n = volume.shape[order[0]]
    budget = block_bytes or int(volume.nbytes * BLOCK_FRACTION)
    step = max(1, min(n, budget // max(1, volume.nbytes // n)))
    for start in range(0, n, step):
        block = read_view_block(volume, order, start, min(n, start + step))
        for i in range(block.shape[0]):
            yield start + i, block[i]


def _write_folders(jobs: list[tuple[np.ndarray, Path, str]], view: str, n: int, title: str, block_bytes: int | None,
                   workers: int, progress: bool) -> None:
    """Write each (volume, folder, suffix) job re-sliced for ``view`` into its (existing) folder."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for data, folder, suffix in jobs:
            pending = []
            for i, arr in track(_blocks(data, view, block_bytes), n, f"{title}/{folder.name.split('.tmp-')[0]}", progress):
                pending.append(pool.submit(write_slice, folder / f"{i:04d}{suffix}", arr))
                if len(pending) >= 4 * max(1, workers):
                    pending.pop(0).result()
            for job in pending:
                job.result()


def _write_atomic(out_root: Path, parts: list[tuple[Volume, str, str]], view: str, block_bytes: int | None, workers: int,
                  progress: bool) -> None:
    """Write the ``(volume, subfolder, suffix)`` parts of one projection into a temporary folder and
    rename it to ``out_root`` when complete (replacing a previous complete output)."""
    sweep_stale(out_root)
    # a forced rebuild replaces a previous complete output of ours
    with atomic_output(out_root, on_existing=shutil.rmtree) as tmp:
        jobs = []
        for volume, sub, suffix in parts:
            folder = tmp / sub if sub else tmp
            folder.mkdir(parents=True)
            jobs.append((volume.data, folder, suffix))
        n = parts[0][0].data.shape[VIEW_AXES[view][0]]
        _write_folders(jobs, view, n, out_root.name if parts[0][1] else out_root.parent.name, block_bytes, workers, progress)


def write_view(
    image: Volume,
    label: Volume,
    view: str,
    out_root: Path,
    label_suffix: str,
    block_bytes: int | None = None,
    workers: int = 2,
    progress: bool = True,
) -> None:
    """Write one projection (images and labels) of a volume pair to ``out_root`` atomically."""
    _write_atomic(out_root, [(image, "images", image.suffix), (label, "labels", label_suffix)], view, block_bytes, workers, progress)


@dataclass(frozen=True)
class Writing:
    """How projections are written: rebuilt when they exist (``force``), memory per block of output
    slices (``block_bytes``; None: a quarter of the volume), reader/writer threads, progress bars."""

    force: bool = False
    block_bytes: int | None = None
    workers: int = 2
    progress: bool = True


def _source_record(labels_dir: Path) -> str | None:
    """The text of the record of what wrote ``labels_dir`` (None for labels without one: human labels)."""
    record = labels_source_path(labels_dir)
    return record.read_text() if record.is_file() else None


def _outdated(projected_labels: Path, record: str | None) -> bool:
    """Whether a written projection's labels came from other generated labels than ``record`` describes."""
    return record is not None and _source_record(projected_labels) != record


def _claim(projected_labels: Path, record: str | None) -> None:
    if record is not None:
        write_text_atomic(labels_source_path(projected_labels), record)


def project_group(group: Group, data_dir: Path, store: VolumeStore, how: Writing = Writing()) -> list[str]:
    """Write the ``_xz`` and ``_zy`` projections of a labelled base group; returns the views written."""
    if not group.projections or group.view != "z":
        raise ValueError(f"group {group.name} has no projections")
    labels_dir = group.labels_dir(data_dir)
    assert labels_dir is not None
    record = _source_record(labels_dir)
    projected = {v: data_dir / f"{group.root}_{v}" / "labels" for v in ("xz", "zy")}
    todo = [v for v in ("xz", "zy") if how.force or not projected[v].parent.is_dir() or _outdated(projected[v], record)]
    if not todo:
        return []
    image, label = store.open_pair(group.images_dir(data_dir), labels_dir, group.images_follow_labels, group.label_kind)
    for view in todo:
        write_view(image, label, view, projected[view].parent, label.suffix, how.block_bytes, how.workers, how.progress)
        _claim(projected[view], record)
    return todo


def project_pseudo_labels(group: Group, data_dir: Path, store: VolumeStore, how: Writing = Writing()) -> list[str]:
    """Write the ``_xz``/``_zy`` projections of a train kidney's pseudo labels into
    ``<root>_<view>/pseudo_labels`` (beside the projections of its images and labels); returns the views written."""
    source = group.pseudo_labels_dir(data_dir)
    if source is None or not group.has_pseudo_labels(data_dir):
        return []
    outs = {v: data_dir / f"{group.root}_{v}" / source.name for v in ("xz", "zy")}
    record = _source_record(source)
    todo = [v for v in ("xz", "zy") if how.force or not outs[v].is_dir() or _outdated(outs[v], record)]
    if not todo:
        return []
    missing = [v for v in todo if not (data_dir / f"{group.root}_{v}" / "images").is_dir()]
    if missing:  # the image projections own the folder (written atomically as a whole): they come first
        raise UserError(f"{group.name}: write the projections of its images first (generate_mutliview.py), "
                        f"{group.root}_{missing[0]}/images is missing")
    image = store.open(group.images_dir(data_dir), "image")
    label = store.open(source, "pseudo")
    if label.shape != image.shape:
        raise UserError(f"{source}: pseudo labels are {label.shape} but the images are {image.shape}; "
                        "rerun generate_pseudo.py --split train")
    for view in todo:
        _write_atomic(outs[view], [(label, "", label.suffix)], view, how.block_bytes, how.workers, how.progress)
        _claim(outs[view], record)
    return todo


def _report(what: str, written: list[str]) -> None:
    print(f"{what}: " + (f"wrote {', '.join('_' + v for v in written)}" if written else "complete, skipped"))


def project_split(
    data_dir: str | Path,
    splits: tuple[str, ...],
    registry: Registry | None = None,
    store: VolumeStore | None = None,
    force: bool = False,
    block_bytes: int | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Project every labelled group of ``splits`` that declares projections. Returns group -> views written."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data directory not found (RAW_DATA_DIR)")
    registry = registry or Registry.load()
    store = store or VolumeStore(workers=workers, progress=progress)
    candidates = [g for g in registry.base_groups() if g.split in splits and g.projections]
    present = [g for g in candidates if g.is_present(data_dir, need_labels=True)]
    if not present:
        names = ", ".join(g.labels or g.name for g in candidates)
        raise UserError(f"{data_dir}: no labelled volume to project (looked for {names})")
    done: dict[str, list[str]] = {}
    for group in present:
        written = project_group(group, data_dir, store, Writing(force, block_bytes, workers, progress))
        done[group.name] = written
        _report(group.name, written)
    return done


def project_train_pseudo(data_dir: str | Path, registry: Registry | None = None, store: VolumeStore | None = None,
                         **writing) -> dict[str, list[str]]:
    """Project the pseudo labels of every train kidney that has them (``writing``: the fields of
    :class:`Writing`, as :func:`project_split` takes them). Returns group -> views written."""
    data_dir = Path(data_dir).resolve()
    registry = registry or Registry.load()
    how = Writing(**writing)
    store = store or VolumeStore(workers=how.workers, progress=how.progress)
    done: dict[str, list[str]] = {}
    for group in registry.base_groups("train"):
        if group.projections and group.has_pseudo_labels(data_dir):
            written = project_pseudo_labels(group, data_dir, store, how)
            done[group.name] = written
            _report(f"{group.name} pseudo labels", written)
    return done
