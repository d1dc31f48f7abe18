"""The pieces :class:`src.inference.predictor.KidneyPredictor` is built from.

:func:`build_engines` turns the ``predict`` config's checkpoints into the 2-D engine (and the 3-D one);
:func:`score_of` gives the per-slice quantity a threshold decides on (the 2-D probability, or the
blend's score with 3-D models); :func:`check_postprocess` validates the ``postprocess`` settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import ListConfig

from src.inference.blend import blend_mode, blend_score_slice
from src.inference.postprocess import THRESHOLD_MODES
from src.utils.errors import UserError
from src.utils.options import look_up


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
                             device=device, amp=e.amp, progress=cfg.progress, devices=e.get("devices"),
                             pipeline=e.get("pipeline", True), prefetch=e.get("prefetch", 1), compile=e.get("compile", False),
                             channels_last=e.get("channels_last", True), fixed_batch=e.get("fixed_batch"))
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
    value_range = blend_mode(blend["mode"]).value_range
    return Score(lambda z: blend_score_slice(prob[z], prob_3d[z], **blend), float(blend["threshold"]), value_range)


def check_postprocess(post) -> tuple[str, float, int]:
    post = post or {}
    mode = str(post.get("threshold_mode", "fixed"))
    look_up(mode, THRESHOLD_MODES, "postprocess.threshold_mode")
    fraction = float(post.get("top_fraction", 0.002))
    min_size = int(post.get("min_component_size", 0) or 0)
    return mode, fraction, min_size
