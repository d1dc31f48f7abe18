"""One object from checkpoints to submission rows: :class:`KidneyPredictor`.

Built once from a ``predict``-style config (``KidneyPredictor.from_config(cfg)``), it owns the 2-D
inference engine (and the 3-D one), the decision settings (threshold, blend, post-processing,
resolution) and a work folder, and answers, per kidney volume:

- :meth:`~KidneyPredictor.probabilities`: the 2-D (and 3-D) probabilities as float16 memory maps;
- :meth:`~KidneyPredictor.kept_probabilities`: the same, read from the work folder of an earlier run;
- :meth:`~KidneyPredictor.score`: what the threshold decides on (the 2-D probability or the blend);
- :meth:`~KidneyPredictor.mask`: the per-slice mask after post-processing;
- :meth:`~KidneyPredictor.rows`: the submission rows (id -> RLE);
- :meth:`~KidneyPredictor.pseudo_labels`: the kidney's pseudo-label PNGs, resumable;
- :meth:`~KidneyPredictor.forget`: remove the kidney's work files.

``src.predict``, ``src.calibrate``, ``generate_pseudo.py`` and the Kaggle notebook (through
``src.predict``) use it; the names of the work files live here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from src.data.registry import Registry
from src.data.volumes import Volume
from src.inference.decision import Score, build_engines, check_postprocess, score_of
from src.inference.postprocess import postprocess_volume, threshold_chunk
from src.inference.resolution import predict_at, rescale_factor
from src.utils.errors import UserError

log = logging.getLogger(__name__)
WORK_FILES = ("", "_3d", "_score", "_mask")  # <kidney><suffix>.npy: 2-D, 3-D, blended score, post-processed mask
KEPT_MODELS = "models.json"  # beside kept probabilities (keep_probabilities=true): the models and settings that made them
PSEUDO_WORK = ".pseudo-work"  # beside a labels folder: the per-view maps of an interrupted pseudo-labelling run


def load_probabilities(path, shape, what: str, volume: str = "the volume") -> np.ndarray:
    """A saved (Z, H, W) probability ``.npy`` as a read-only memory map; a one-line error when it is missing,
    not an array, or not of ``shape``, the shape of ``volume`` (``what`` names the setting that gave the path)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}={path}: file not found")
    try:
        arr = np.load(path, mmap_mode="r")
    except ValueError as err:
        raise UserError(f"{what}={path}: not a .npy array ({err})") from None
    if tuple(arr.shape) != tuple(shape):
        raise UserError(f"{what}={path}: shape {tuple(arr.shape)} is not {volume}'s {tuple(shape)}")
    return arr


FROM_CHECKPOINT = "checkpoint"  # threshold=checkpoint: each 2-D checkpoint says its own (model.predict_threshold)


def resolve_threshold(setting, members, with_3d: bool = False) -> float:
    """The 2-D threshold: ``setting`` when it is a number; with ``checkpoint``, the members' own thresholds
    (:func:`src.inference.checkpoints.threshold_of`) averaged with their ensemble weights, logged with where
    each comes from. With 3-D checkpoints the blend's threshold decides instead."""
    if isinstance(setting, str) and setting.strip().lower() == FROM_CHECKPOINT:
        total = sum(m.weight for m in members)
        value = sum(m.weight * m.threshold for m in members) / total if total > 0 else 0.5
        if not with_3d:
            for m in members:
                log.info("threshold %.4g of %s (%s)", m.threshold, Path(m.name).name, m.threshold_source)
            log.info("2-D threshold %.4g (threshold=checkpoint; pass threshold=<number> to override)", value)
        return float(value)
    try:
        value = float(setting)
    except (TypeError, ValueError):
        raise UserError(f"threshold must be a probability or '{FROM_CHECKPOINT}', got {setting!r}") from None
    if value != value:
        raise UserError("threshold must be a number, got nan")
    return value


class KidneyPredictor:
    """A configured ensemble that predicts kidneys into a work folder (see the module docstring)."""

    def __init__(self, engine, engine_3d, work: str | Path, threshold: float = 0.5, blend=None, postprocess=None,
                 resolution=None, registry: Registry | None = None):
        self.engine, self.engine_3d = engine, engine_3d
        self.work = Path(work)
        self.threshold = float(threshold)
        self.blend = dict(blend or {"mode": "roi", "threshold": 0.55, "hull_threshold": 0.05, "kernel": 5, "iterations": 5,
                                    "weight_2d": 1.0, "weight_3d": 1.0})
        self.postprocess = dict(postprocess or {})
        check_postprocess(self.postprocess)
        self.resolution = dict(resolution or {})
        self.registry = registry or Registry.load()
        self._scores: dict[str, Score] = {}

    @classmethod
    def from_config(cls, cfg, work: str | Path | None = None) -> KidneyPredictor:
        """From a ``predict`` config (``checkpoints``, ``engine``, ``blend``, ``postprocess``, ...); the work
        folder defaults to ``<run dir>/probabilities``."""
        engine, engine_3d = build_engines(cfg)
        work = Path(work) if work is not None else Path(cfg.paths.output_dir) / "probabilities"
        threshold = resolve_threshold(cfg.threshold, engine.members, with_3d=engine_3d is not None)
        return cls(engine, engine_3d, work, threshold, cfg.get("blend"), cfg.get("postprocess"), cfg.get("resolution"))

    # ------------------------------------------------------------------ files
    def path(self, kidney: str, kind: str = "") -> Path:
        """``<work>/<kidney><kind>.npy`` for ``kind`` in ``WORK_FILES``."""
        if kind not in WORK_FILES:
            raise ValueError(f"unknown work file kind {kind!r}")
        return self.work / f"{kidney}{kind}.npy"

    def forget(self, kidney: str) -> None:
        """Remove ``kidney``'s work files (a real kidney's take GBs)."""
        self._scores.pop(kidney, None)
        for kind in WORK_FILES:
            self.path(kidney, kind).unlink(missing_ok=True)

    # ------------------------------------------------------------------ a kidney
    def probabilities(self, volume: Volume, kidney: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(2-D probabilities, 3-D probabilities or None), float16 memory maps in the work folder (at
        the training voxel size and rescaled back when ``resolution.rescale``)."""
        if self.engine is None:
            raise ValueError("this predictor was built without models (probabilities given instead)")
        self.work.mkdir(parents=True, exist_ok=True)
        factor = rescale_factor(kidney, self.resolution, self.registry)
        chunk = int(self.resolution.get("chunk", 16))
        prob = predict_at(self.engine, volume, factor, self.path(kidney), kidney, chunk)
        prob_3d = None if self.engine_3d is None else predict_at(self.engine_3d, volume, factor, self.path(kidney, "_3d"), kidney, chunk)
        return prob, prob_3d

    def kept_probabilities(self, folder: str | Path, volume: Volume, kidney: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(2-D, 3-D or None) probabilities of ``kidney`` kept in ``folder`` by an earlier run of the same ensemble
        (``keep_probabilities=true``: its work folder), instead of predicted; the 3-D ones are read when this
        predictor has 3-D models. ``src.predict`` checks its checkpoint lists against the folder's ``KEPT_MODELS``."""
        folder = Path(folder)
        if folder.resolve() == self.work.resolve():
            raise UserError(f"probabilities_from={folder} is this run's own work folder, which it empties; "
                            f"pass the folder of the run that kept them")
        self.work.mkdir(parents=True, exist_ok=True)  # the decision's own work files (score, mask) go here
        prob = load_probabilities(folder / self.path(kidney).name, volume.shape, "probabilities_from", kidney)
        prob_3d = None
        if self.engine_3d is not None:
            prob_3d = load_probabilities(folder / self.path(kidney, "_3d").name, volume.shape, "probabilities_from (3-D)", kidney)
        return prob, prob_3d

    def score(self, volume: Volume, kidney: str, probabilities=None) -> Score:
        """The per-slice quantity the threshold decides on (probabilities predicted unless given)."""
        if kidney not in self._scores or probabilities is not None:
            prob, prob_3d = probabilities if probabilities is not None else self.probabilities(volume, kidney)
            self._scores[kidney] = score_of(prob, prob_3d, self.threshold, self.blend)
        return self._scores[kidney]

    def stored_score(self, volume: Volume, kidney: str) -> np.ndarray:
        """The score as a (Z, H, W) array (written to ``<kidney>_score.npy`` when it is a blend)."""
        return self.score(volume, kidney).stored(volume.shape, self.path(kidney, "_score"))

    def mask(self, volume: Volume, kidney: str, threshold: float | None = None) -> Callable[[int], np.ndarray]:
        """``mask(z)``: the boolean mask of slice ``z`` after ``postprocess`` (a fixed threshold, or the
        top fraction of the kidney's voxels, then small components removed); ``threshold`` replaces the
        score's default."""
        mode, fraction, min_size = check_postprocess(self.postprocess)
        score = self.score(volume, kidney)
        t = score.threshold if threshold is None else float(threshold)
        if mode == "fixed" and min_size <= 0:  # exact for float16 probabilities (NumPy 2 compares `p16 > 0.4` in float16)
            return lambda z: threshold_chunk(score.slice(z), t)
        values = self.stored_score(volume, kidney)
        out = np.lib.format.open_memmap(self.path(kidney, "_mask"), mode="w+", dtype=np.uint8, shape=tuple(volume.shape))
        mask, used = postprocess_volume(values, mode, t, fraction, min_size, out=out, value_range=score.value_range)
        log.info("%s: threshold %.4g (%s)%s", kidney, used, mode, f", components under {min_size} voxels removed" if min_size > 0 else "")
        return lambda z: np.asarray(mask[z]) > 0

    def rows(self, volume: Volume, kidney: str, wanted: Iterable[int] | None = None) -> dict[str, str]:
        """Submission rows ``{<kidney>_<NNNN>: RLE}`` for the slice numbers ``wanted`` (default: all)."""
        from src.inference.submission import submission_rows

        wanted = set(volume.numbers) if wanted is None else set(wanted)
        return submission_rows(kidney, volume.first, len(volume), self.mask(volume, kidney), wanted)

    @classmethod
    def for_labels(cls, engine, labels_dir: str | Path, registry: Registry | None = None) -> KidneyPredictor:
        """A predictor whose work folder sits beside ``labels_dir`` (``<labels_dir>/../.pseudo-work``), so an
        interrupted pseudo-labelling run resumes from it."""
        return cls(engine, None, Path(labels_dir).parent / PSEUDO_WORK, registry=registry)

    def pseudo_labels(self, volume: Volume, kidney: str, labels_dir: str | Path, overwrite: bool = False,
                      replace_other: bool = False) -> int:
        """Write ``kidney``'s missing pseudo labels (``labels_dir/NNNN.png`` = round(probability * 255)),
        resumable from the per-view maps in the work folder, which goes once every label exists (see
        :func:`src.inference.pseudo_labels.pseudo_label`; labels another ensemble wrote are an error unless
        ``overwrite`` or ``replace_other``). Returns how many were written."""
        from src.inference.pseudo_labels import pseudo_label

        if self.engine is None:
            raise ValueError("this predictor was built without models")
        return pseudo_label(self.engine, volume, Path(labels_dir), self.work, overwrite, kidney, replace_other)

    def estimate(self, shapes: dict[str, tuple[int, int, int]], repeats: int = 2) -> list[dict]:
        """The 2-D engine's time estimate for volumes of ``shapes`` (see ``InferenceEngine.estimate``)."""
        return self.engine.estimate(shapes, repeats)
