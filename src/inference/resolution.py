"""Resolution-aware inference: predict a kidney at the training voxel size, answer on its own grid.

kidney_6 (the private leaderboard) was scanned at 63.08 um against the 50 um the models trained at,
so its vessels look 0.79x as wide as anything seen in training. With ``resolution.rescale=true`` the
image is resampled (trilinear, :mod:`src.inference.resample`) by ``voxel_um / target_um`` to the
training grid, the engine predicts there, and the probabilities are resampled back to the original
shape before any threshold (the 5th place: +0.036 private). Every step goes through ``.npy`` memory
maps in a work folder next to the output, in z-chunks: no float32 copy of a volume is ever held.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from src.data.registry import Registry
from src.data.volumes import Volume
from src.inference.resample import resample_to_file, resampled_shape
from src.utils.errors import UserError

log = logging.getLogger(__name__)


def voxel_size(kidney: str, overrides: Mapping | None, registry: Registry) -> float:
    """The kidney's voxel size in um: ``resolution.voxel_um.<kidney>``, else the registry's."""
    if overrides and kidney in overrides:
        return float(overrides[kidney])
    group = registry.groups.get(kidney)
    if group is None:
        raise UserError(f"resolution.rescale: no voxel size for {kidney} (the registry does not list it): "
                        f"pass resolution.voxel_um.{kidney}=<um>")
    return group.voxel_um


def rescale_factor(kidney: str, resolution: Mapping, registry: Registry) -> float:
    """``voxel_um / target_um`` for ``kidney``, or 1.0 when rescaling is off or the sizes differ by less
    than ``resolution.min_change`` (kidney_5's 50.28 um against 50 um is left alone by default)."""
    if not resolution or not resolution.get("rescale", False):
        return 1.0
    target = float(resolution.get("target_um") or registry.train_voxel_um)
    factor = voxel_size(kidney, resolution.get("voxel_um"), registry) / target
    if factor <= 0:
        raise UserError(f"resolution: the voxel size of {kidney} must be positive")
    return 1.0 if abs(factor - 1.0) < float(resolution.get("min_change", 0.0)) else factor


def predict_at(engine, volume: Volume, factor: float, out: Path, name: str = "", chunk: int = 16) -> np.ndarray:
    """``engine.predict(volume)`` on the grid scaled by ``factor``, as a float16 memory map of the
    volume's own shape at ``out`` (``factor`` 1: the plain prediction)."""
    out = Path(out)
    if factor == 1.0:
        return engine.predict(volume, out=out, name=name)
    work = out.with_name(f".{out.stem}.rescale-{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    try:
        shape = resampled_shape(volume.shape, factor)
        log.info("%s: predicted at %.4gx, %s -> %s and back", name, factor, "x".join(map(str, volume.shape)), "x".join(map(str, shape)))
        image = resample_to_file(volume.data, shape, work / "image.npy", chunk=chunk)
        scaled = Volume(volume.folder, image, 0, volume.suffix, volume.stats, work / "image.npy", 0)
        prob = engine.predict(scaled, out=work / "probabilities.npy", name=f"{name} x{factor:.3g}".strip())
        result = resample_to_file(prob, volume.shape, out, chunk=chunk, dtype=np.float16)
        del prob, image, scaled
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
