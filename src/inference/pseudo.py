"""Pseudo labels for an unlabelled volume, resumable.

The ensemble's probability of each view is written slab by slab into its own float16 memory map in a
work folder (``<labels>/../.pseudo-work``), with the next slice to do recorded after each slab, so an
interrupted run continues where it stopped (a slab is overwritten, never added twice). Then every
missing ``labels/NNNN.png`` = round(mean over views * 255) is written atomically; label files that
already exist are kept. The work folder is removed once every label exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from src.data.registry import VIEW_AXES
from src.data.volumes import Volume, release_pages
from src.inference.engine import InferenceEngine
from src.utils.progress import track


def write_png_atomic(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: OpenCV could not write this label")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ensemble_fingerprint(engine: InferenceEngine) -> str:
    spec = {
        "members": [[m.name, m.weight, m.tta, m.in_channels] for m in engine.members],
        "roi": list(engine.roi), "overlap": engine.overlap, "mode": engine.mode, "views": list(engine.views),
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _view_maps(engine: InferenceEngine, volume: Volume, work: Path, name: str) -> list[np.ndarray]:
    """Per-view probability maps (float16, volume shape), predicting only what the work folder lacks."""
    maps = []
    for view in engine.views:
        path, done = work / f"{view}.npy", work / f"{view}.next"
        if path.exists():
            prob = np.load(path, mmap_mode="r+")
        else:
            prob = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=volume.shape)
        start = int(done.read_text()) if done.exists() else 0
        target = prob.transpose(VIEW_AXES[view])

        def write(i0, i1, probs, target=target, prob=prob, done=done):
            target[i0:i1] = probs.astype(np.float16)
            prob.flush()
            release_pages(prob)
            tmp = done.with_name(done.name + ".tmp")
            tmp.write_text(str(i1))
            os.replace(tmp, done)

        if start < target.shape[0]:
            engine.predict_view(volume, view, write, start=start, name=name)
        maps.append(prob)
    return maps


def pseudo_label(engine: InferenceEngine, volume: Volume, labels_dir: Path, overwrite: bool = False, name: str = "") -> int:
    """Write the missing pseudo labels of ``volume`` into ``labels_dir``; returns how many were written."""
    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    work = labels_dir.parent / ".pseudo-work"
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
    maps = _view_maps(engine, volume, work, name)
    for n in track(missing, len(missing), f"{name} labels".strip(), engine.progress):
        z = n - volume.first
        prob = sum(m[z].astype(np.float32) for m in maps) / len(maps)
        write_png_atomic(labels_dir / f"{n:04d}.png", np.rint(prob * 255).astype(np.uint8))
    del maps
    shutil.rmtree(work, ignore_errors=True)
    return len(missing)
