"""Pseudo labels for an unlabelled volume, resumable.

The ensemble's probability of each view is written block by block into its own float16 memory map
in a work folder (:class:`~src.inference.predictor.KidneyPredictor` names it:
``<labels>/../.pseudo-work``), with the next slice to do recorded after each block, so an
interrupted run continues where it stopped (a block is overwritten, never added twice). Then every
missing ``labels/NNNN.png`` = round(mean over views * 255) is written atomically; label files that
already exist are kept. The work folder is removed once every label exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from src.data.volumes import Volume
from src.inference.engine import InferenceEngine
from src.utils.files import atomic_output
from src.utils.progress import track


def write_png_atomic(path: Path, image: np.ndarray) -> None:
    with atomic_output(path, keep_suffix=True) as tmp:  # OpenCV picks the format by the extension
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: OpenCV could not write this label")


def ensemble_fingerprint(engine: InferenceEngine) -> str:
    spec = {
        "members": [[m.name, m.weight, m.tta, m.in_channels] for m in engine.members],
        "roi": list(engine.rois[0]) if len(set(engine.rois)) == 1 else [list(r) for r in engine.rois],
        "overlap": engine.overlap, "mode": engine.mode, "views": list(engine.views),
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def pseudo_label(engine: InferenceEngine, volume: Volume, labels_dir: Path, work: Path, overwrite: bool = False,
                 name: str = "") -> int:
    """Write the missing pseudo labels of ``volume`` into ``labels_dir``, resuming from the per-view maps
    in ``work``; returns how many were written."""
    labels_dir, work = Path(labels_dir), Path(work)
    labels_dir.mkdir(parents=True, exist_ok=True)
    numbers = list(volume.numbers)
    missing = [n for n in numbers if overwrite or not (labels_dir / f"{n:04d}.png").exists()]
    if not missing:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    fingerprint = ensemble_fingerprint(engine)
    meta = work / "ensemble.json"
    if work.exists() and (not meta.exists() or json.loads(meta.read_text()).get("fingerprint") != fingerprint
                          or json.loads(meta.read_text()).get("shape") != list(volume.shape)):
        shutil.rmtree(work)  # partial results of another ensemble: ours to discard
    work.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"fingerprint": fingerprint, "shape": list(volume.shape)}))
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
