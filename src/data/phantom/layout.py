"""Writing a phantom in the Kaggle layout: slice folders where the registry puts them, and the CSVs.

Train kidneys get images and 0/255 labels (and the dense labels of a middle run of slices where the
registry declares a dense subset, as ``kidney_3_dense``); test kidneys get images, and their truth
goes to ``solution.csv`` in the Kaggle scorer's format with an all-empty ``sample_submission.csv``;
the external kidney gets lossless 16-bit JPEG 2000 images and no labels. ``train_rles.csv`` holds
every written label slice.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

import numpy as np

from src.data.phantom.render import RenderedKidney, render_kidney
from src.data.phantom.specs import KIDNEYS, KidneySpec
from src.data.volumes import read_slice, write_slice
from src.metrics.rle import EMPTY_RLE, rle_encode


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


def write_train_kidney(root: Path, spec: KidneySpec, kidney: RenderedKidney, summary: dict, train_rles: list) -> None:
    """Images and labels; the dense labels of the middle half of the slices where the registry has a dense subset."""
    write_slices(spec.group.images_dir(root), kidney.image)
    write_slices(spec.group.labels_dir(root), label_planes(kidney.labels))
    train_rles.extend(rle_rows(spec.folder, kidney.labels))
    summary[spec.folder] = kidney_summary(kidney, spec.split, spec.window, labelled_fraction=kidney.labelled_fraction)
    if spec.dense_subset is not None:
        folder = PurePosixPath(spec.dense_subset.root).name
        z = kidney.shape[0]
        first, stop = z // 4, (3 * z) // 4
        dense = kidney.truth[first:stop]
        write_slices(spec.dense_subset.labels_dir(root), label_planes(dense), first)
        train_rles.extend(rle_rows(folder, dense, first))
        summary[folder] = kidney_summary(
            kidney, spec.split, spec.window, first=first, count=stop - first, images=False, labelled_fraction=1.0
        )


def write_test_kidney(root: Path, spec: KidneySpec, kidney: RenderedKidney, summary: dict, sample: list, solution: list) -> None:
    """Images only; an empty row per slice for the sample submission and the truth's row for the solution."""
    write_slices(spec.group.images_dir(root), kidney.image)
    _, h, w = kidney.shape
    for z, (row_id, rle) in enumerate(rle_rows(spec.folder, kidney.truth)):
        sample.append((row_id, EMPTY_RLE))
        solution.append((row_id, rle, w, h, spec.folder, z))
    summary[spec.folder] = kidney_summary(kidney, spec.split, spec.window, labels=False)


def write_external_kidney(root: Path, spec: KidneySpec, kidney: RenderedKidney, summary: dict) -> None:
    """The HOA kidney as JPEG 2000 slices, no labels."""
    write_jp2_slices(spec.group.images_dir(root), kidney.image)
    summary[spec.folder] = kidney_summary(kidney, spec.split, spec.window, labels=False)


def write_phantom(root: Path, seed: int, size: str, style: str = "A") -> dict:
    """Render every kidney and write every folder and csv into ``root``; returns the per-folder summary."""
    summary: dict[str, dict] = {}
    train_rles: list[tuple[str, str]] = []
    sample, solution = [], []
    for spec in KIDNEYS.values():
        kidney = render_kidney(spec.name, seed, size, style=style)
        if spec.group.split == "train":
            write_train_kidney(root, spec, kidney, summary, train_rles)
        elif spec.group.split == "test":
            write_test_kidney(root, spec, kidney, summary, sample, solution)
        else:
            write_external_kidney(root, spec, kidney, summary)
    write_csv(root / "sample_submission.csv", ["id", "rle"], sample)
    write_csv(root / "train_rles.csv", ["id", "rle"], train_rles)
    write_csv(root / "solution.csv", ["id", "rle", "width", "height", "image_id", "slice_id"], solution)
    return summary
