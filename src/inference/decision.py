"""From a configured ensemble to a kidney's mask: shared by ``src.predict`` and ``src.calibrate``.

:func:`build_engines` turns the ``predict`` config's checkpoints into the 2-D engine (and the 3-D one);
:func:`kidney_probabilities` predicts a volume with them (at the training voxel size when
``resolution.rescale``); :func:`score_of` gives the per-slice quantity a threshold decides on (the
2-D probability, or the blend's score with 3-D models); :func:`mask_of` applies the ``postprocess``
settings (fixed or top-fraction threshold, small-component removal) and returns a per-slice mask function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from omegaconf import ListConfig

from src.data.registry import Registry
from src.data.volumes import Volume
from src.inference.blend import SCORE_RANGE, blend_score_slice
from src.inference.postprocess import THRESHOLD_MODES, postprocess_volume
from src.inference.resolution import predict_at, rescale_factor
from src.utils.errors import UserError

log = logging.getLogger(__name__)


def per_checkpoint(value, n: int, what: str, default) -> list:
    if value is None:
        return [default] * n
    if isinstance(value, (list, tuple, ListConfig)):
        if len(value) != n:
            raise UserError(f"{what} needs one value per checkpoint ({n}), got {len(value)}")
        return list(value)
    return [value] * n


def build_engines(cfg):
    """(2-D InferenceEngine, Engine3D or None) from ``checkpoints``/``checkpoints_3d`` and their settings."""
    from src.inference.checkpoints import load_member, load_member_3d
    from src.inference.engine import InferenceEngine, resolve_device
    from src.inference.engine3d import Engine3D

    checkpoints = list(cfg.checkpoints or [])
    if not checkpoints:
        raise UserError("no model: pass checkpoints=[path/to/model.ckpt,...]")
    weights = per_checkpoint(cfg.weights, len(checkpoints), "weights", 1.0)
    ttas = per_checkpoint(cfg.tta, len(checkpoints), "tta", "none")
    e = cfg.engine
    device = resolve_device(e.device)
    members = [load_member(c, float(w), str(t), device) for c, w, t in zip(checkpoints, weights, ttas)]
    engine = InferenceEngine(members, roi_size=e.roi_size, overlap=e.overlap, mode=e.mode, padding_mode=e.padding_mode,
                             sw_batch_size=e.sw_batch_size, slices_per_batch=e.slices_per_batch, views=list(e.views),
                             device=device, amp=e.amp, progress=cfg.progress)
    checkpoints_3d = list(cfg.get("checkpoints_3d") or [])
    if not checkpoints_3d:
        return engine, None
    w3 = per_checkpoint(cfg.weights_3d, len(checkpoints_3d), "weights_3d", 1.0)
    t3 = per_checkpoint(cfg.tta_3d, len(checkpoints_3d), "tta_3d", "none")
    e3 = cfg.engine_3d
    engine_3d = Engine3D([load_member_3d(c, float(w), str(t), device) for c, w, t in zip(checkpoints_3d, w3, t3)],
                         roi_size=e3.roi_size, overlap=e3.overlap, mode=e3.mode, sw_batch_size=e3.sw_batch_size,
                         slab=e3.slab, device=device, amp=e.amp, progress=cfg.progress)
    return engine, engine_3d


def kidney_probabilities(engine, engine_3d, volume: Volume, kidney: str, work: Path, resolution, registry: Registry):
    """(2-D probabilities, 3-D probabilities or None) of ``volume`` as float16 memory maps in ``work``."""
    factor = rescale_factor(kidney, resolution or {}, registry)
    chunk = int((resolution or {}).get("chunk", 16))
    prob = predict_at(engine, volume, factor, work / f"{kidney}.npy", kidney, chunk)
    prob_3d = None if engine_3d is None else predict_at(engine_3d, volume, factor, work / f"{kidney}_3d.npy", kidney, chunk)
    return prob, prob_3d


@dataclass
class Score:
    """What a kidney's threshold decides on: ``slice(z)`` (float), its default threshold and value range."""

    slice: Callable[[int], np.ndarray]
    threshold: float
    value_range: tuple[float, float]
    volume: np.ndarray | None = None  # the score as a (Z, H, W) array, when it is one already

    def stored(self, shape, path: Path) -> np.ndarray:
        """The score as a volume: itself, or written slice by slice to a float16 memory map at ``path``."""
        if self.volume is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=tuple(shape))
            for z in range(shape[0]):
                out[z] = self.slice(z)
            out.flush()
            self.volume = out
        return self.volume


def score_of(prob: np.ndarray, prob_3d: np.ndarray | None, threshold: float, blend) -> Score:
    """The 2-D probability (decided at ``threshold``), or with 3-D probabilities the blend's score
    (decided at ``blend.threshold``; :func:`src.inference.blend.blend_score_slice`)."""
    if prob_3d is None:
        return Score(lambda z: np.asarray(prob[z]), float(threshold), (0.0, 1.0), prob)
    blend = dict(blend)
    return Score(lambda z: blend_score_slice(prob[z], prob_3d[z], **blend), float(blend["threshold"]), SCORE_RANGE[blend["mode"]])


def check_postprocess(post) -> tuple[str, float, int]:
    post = post or {}
    mode = str(post.get("threshold_mode", "fixed"))
    if mode not in THRESHOLD_MODES:
        raise UserError(f"postprocess.threshold_mode must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")
    fraction = float(post.get("top_fraction", 0.002))
    min_size = int(post.get("min_component_size", 0) or 0)
    return mode, fraction, min_size


def mask_of(score: Score, shape, post, work: Path, name: str, threshold: float | None = None) -> Callable[[int], np.ndarray]:
    """Per-slice boolean mask after ``postprocess`` (``threshold`` replaces the score's default)."""
    mode, fraction, min_size = check_postprocess(post)
    t = score.threshold if threshold is None else float(threshold)
    if mode == "fixed" and min_size <= 0:
        return lambda z: score.slice(z) > t
    volume = score.stored(shape, work / f"{name}_score.npy")
    mask = np.lib.format.open_memmap(work / f"{name}_mask.npy", mode="w+", dtype=np.uint8, shape=tuple(shape))
    mask, used = postprocess_volume(volume, mode, t, fraction, min_size, out=mask, value_range=score.value_range)
    log.info("%s: threshold %.4g (%s)%s", name, used, mode, f", components under {min_size} voxels removed" if min_size > 0 else "")
    return lambda z: np.asarray(mask[z]) > 0
