"""Pseudo labels for an unlabelled volume, resumable.

The ensemble's probability of each view is written block by block into its own float16 memory map
in a work folder (:class:`~src.inference.predictor.KidneyPredictor` names it:
``<labels>/../.pseudo-work``), with the next slice to do recorded after each block, so an
interrupted run continues where it stopped (a block is overwritten, never added twice). Then every
missing ``labels/NNNN.png`` = round(mean over views * 255) is written atomically; label files that
already exist are kept. The work folder is removed once every label exists.

Labels record what wrote them: ``<labels>_source.json`` beside the folder (:func:`labels_source`: each
checkpoint's resolved path, size and modification time, weight, tta, the roi, overlap, views and the
volume's shape). A rerun with the same ensemble resumes; labels another ensemble wrote (or that carry no
record: written by hand or by an older version) are never mixed with new ones: the run stops with a
one-line error, unless told to rewrite them (``overwrite``, or ``replace_other``, which rewrites them only
when they are another ensemble's and resumes its own).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from src.data.registry import labels_source_path
from src.data.volumes import Volume
from src.inference.engine import InferenceEngine
from src.utils.errors import UserError
from src.utils.files import atomic_output, write_text_atomic
from src.utils.progress import track


def write_png_atomic(path: Path, image: np.ndarray) -> None:
    with atomic_output(path, keep_suffix=True) as tmp:  # OpenCV picks the format by the extension
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: OpenCV could not write this label")


def _file_identity(name: str) -> dict | str:
    path = Path(name)
    if not path.is_file():
        return name  # a model built in memory (tests): its name is all there is
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def labels_source(engine: InferenceEngine, volume: Volume) -> dict:
    """What pseudo labels of ``volume`` written by ``engine`` depend on: the record kept beside them."""
    return json.loads(json.dumps({  # as read back from the record: lists, not tuples
        "members": [{"checkpoint": _file_identity(m.name), "weight": m.weight, "tta": m.tta, "in_channels": m.in_channels}
                    for m in engine.members],
        "roi": [list(r) for r in engine.rois], "overlap": engine.overlap, "mode": engine.mode,
        "views": list(engine.views), "shape": list(volume.shape),
    }))


def describe_source(record: dict | None) -> str:
    """``checkpoints a.ckpt, b.ckpt`` of a record, for messages."""
    if record is None:
        return "no record of the models that wrote them"
    names = [m["checkpoint"]["path"] if isinstance(m["checkpoint"], dict) else m["checkpoint"] for m in record.get("members", [])]
    return "checkpoints " + ", ".join(names)


def pseudo_label(engine: InferenceEngine, volume: Volume, labels_dir: Path, work: Path, overwrite: bool = False,
                 name: str = "", replace_other: bool = False) -> int:
    """Write the missing pseudo labels of ``volume`` into ``labels_dir``, resuming from the per-view maps
    in ``work``; returns how many were written. Labels another ensemble wrote stop the run with a
    :class:`UserError` unless ``overwrite`` (rewrite every label) or ``replace_other`` (rewrite them only when
    they are another ensemble's) is set."""
    labels_dir, work = Path(labels_dir), Path(work)
    numbers = list(volume.numbers)
    source, record_path = labels_source(engine, volume), labels_source_path(labels_dir)
    present = [n for n in numbers if (labels_dir / f"{n:04d}.png").exists()]
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    others = bool(present) and record != source
    if others and not (overwrite or replace_other):
        raise UserError(f"{labels_dir} holds {len(present)} labels that these models did not write "
                        f"({describe_source(record)}); pass --overwrite or --replace_other to rewrite them")
    if overwrite or others:
        record_path.unlink(missing_ok=True)  # from here until the record is written, no claim on what is left
        for n in present:
            (labels_dir / f"{n:04d}.png").unlink()
    labels_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record_path, json.dumps(source, indent=1))
    missing = [n for n in numbers if not (labels_dir / f"{n:04d}.png").exists()]
    if not missing:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    fingerprint = hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()  # models and the volume's shape
    meta = work / "ensemble.json"
    if work.exists() and (not meta.exists() or json.loads(meta.read_text()).get("fingerprint") != fingerprint):
        shutil.rmtree(work)  # partial results of another ensemble or volume: ours to discard
    work.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"fingerprint": fingerprint}))
    maps = engine.view_maps(volume, work, name=name, resume=True)
    chunk = 16
    for c0 in track(range(0, len(missing), chunk), -(-len(missing) // chunk), f"{name} labels".strip(), engine.progress):
        numbers = missing[c0 : c0 + chunk]
        z0, z1 = numbers[0] - volume.first, numbers[-1] - volume.first + 1
        prob = engine.combine(maps, z0, z1)
        for n in numbers:
            write_png_atomic(labels_dir / f"{n:04d}.png", np.rint(prob[n - volume.first - z0] * 255).astype(np.uint8))
    del maps
    shutil.rmtree(work, ignore_errors=True)
    return len(missing)
