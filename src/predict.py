"""Predict every test kidney and write ``submission.csv``:

    python -m src.predict checkpoints=[a.ckpt,b.ckpt] weights=[1,1.5] tta=d4 \\
        paths.data_dir=data/blood-vessel-segmentation output=data/submissions/submission.csv

Every ``<test_dir>/<kidney>/images`` folder is a test volume. The inference engine averages the
ensemble over the three views into a float16 probability memory map in the run folder, which is
thresholded slice by slice into RLE rows (with 3-D checkpoints, ``checkpoints_3d=[...]``, the 3-D
probabilities are blended in as the 4th place submitted: see ``src/inference/blend.py``); the rows follow ``sample_submission.csv`` (every id present,
``1 0`` for an empty slice). Works with the public download's 3 slices per kidney.

Beyond the submitted recipe, all off by default (README "Robustness levers"):
``resolution.rescale=true`` predicts each kidney at the training voxel size and rescales the
probabilities back (:mod:`src.inference.resolution`); ``postprocess.threshold_mode=top_fraction``
keeps the top ``postprocess.top_fraction`` of voxels per kidney instead of a fixed threshold;
``postprocess.min_component_size=N`` removes 3-D connected components under N voxels
(:mod:`src.inference.postprocess`).
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.utils.errors import UserError, find_user_error
from src.utils.resolvers import register_resolvers
from src.utils.settings import REPO_ROOT

register_resolvers()
log = logging.getLogger(__name__)


def _per_checkpoint(value, n: int, what: str, default):
    if value is None:
        return [default] * n
    if isinstance(value, (list, tuple, ListConfig)):
        if len(value) != n:
            raise UserError(f"{what} needs one value per checkpoint ({n}), got {len(value)}")
        return list(value)
    return [value] * n


def test_volumes(test_dir: Path) -> dict[str, Path]:
    """kidney name -> images folder, for every ``test_dir/<kidney>/images``."""
    if not test_dir.is_dir():
        raise UserError(f"{test_dir}: test folder not found (set paths.data_dir or test_dir)")
    found = {p.name: p / "images" for p in sorted(test_dir.iterdir()) if (p / "images").is_dir()}
    if not found:
        raise UserError(f"{test_dir}: no <kidney>/images folder")
    return found


def predict(cfg: DictConfig) -> Path:
    """Run the configured ensemble on the test kidneys; returns the submission path."""
    import numpy as np

    from src.data.registry import Registry
    from src.data.volumes import VolumeStore
    from src.inference.blend import SCORE_RANGE, blend_score_slice
    from src.inference.checkpoints import load_member, load_member_3d
    from src.inference.engine import InferenceEngine, resolve_device
    from src.inference.engine3d import Engine3D
    from src.inference.postprocess import THRESHOLD_MODES, postprocess_volume
    from src.inference.resolution import predict_at, rescale_factor
    from src.inference.submission import check_against_volumes, read_sample_submission, submission_rows, write_submission

    checkpoints = list(cfg.checkpoints or [])
    if not checkpoints:
        raise UserError("no model: pass checkpoints=[path/to/model.ckpt,...]")
    weights = _per_checkpoint(cfg.weights, len(checkpoints), "weights", 1.0)
    ttas = _per_checkpoint(cfg.tta, len(checkpoints), "tta", "none")
    e = cfg.engine
    device = resolve_device(e.device)
    members = [load_member(c, float(w), str(t), device) for c, w, t in zip(checkpoints, weights, ttas)]
    engine = InferenceEngine(members, roi_size=e.roi_size, overlap=e.overlap, mode=e.mode, padding_mode=e.padding_mode,
                             sw_batch_size=e.sw_batch_size, slices_per_batch=e.slices_per_batch, views=list(e.views),
                             device=device, amp=e.amp, progress=cfg.progress)
    checkpoints_3d = list(cfg.get("checkpoints_3d") or [])
    engine_3d = None
    if checkpoints_3d:
        w3 = _per_checkpoint(cfg.weights_3d, len(checkpoints_3d), "weights_3d", 1.0)
        t3 = _per_checkpoint(cfg.tta_3d, len(checkpoints_3d), "tta_3d", "none")
        e3 = cfg.engine_3d
        engine_3d = Engine3D([load_member_3d(c, float(w), str(t), device) for c, w, t in zip(checkpoints_3d, w3, t3)],
                             roi_size=e3.roi_size, overlap=e3.overlap, mode=e3.mode, sw_batch_size=e3.sw_batch_size,
                             slab=e3.slab, device=device, amp=e.amp, progress=cfg.progress)
    blend = dict(cfg.blend)
    post = cfg.get("postprocess") or {}
    mode = str(post.get("threshold_mode", "fixed"))
    if mode not in THRESHOLD_MODES:
        raise UserError(f"postprocess.threshold_mode must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")
    min_size = int(post.get("min_component_size", 0) or 0)
    resolution = cfg.get("resolution") or {}
    registry = Registry.load()
    store = VolumeStore(cfg.paths.cache_dir, progress=cfg.progress)
    folders = test_volumes(Path(cfg.test_dir))
    volumes = {k: store.open(f) for k, f in folders.items()}
    slices = {k: v.numbers for k, v in volumes.items()}
    if cfg.sample_submission:
        wanted = read_sample_submission(Path(cfg.sample_submission))
        check_against_volumes(wanted, slices, str(cfg.sample_submission))
        order = list(wanted.id)
        per_kidney = {k: set(rows.slice) for k, rows in wanted.groupby("kidney")}
    else:
        order = [f"{k}_{n:04d}" for k, r in slices.items() for n in r]
        per_kidney = {k: set(r) for k, r in slices.items()}
    run_dir = Path(cfg.paths.output_dir)
    rles: dict[str, str] = {}
    for kidney, volume in volumes.items():
        if kidney not in per_kidney:
            log.info("%s is not in the sample submission, skipped", kidney)
            continue
        work = run_dir / "probabilities"
        factor = rescale_factor(kidney, resolution, registry)
        chunk = int(resolution.get("chunk", 16))
        prob = predict_at(engine, volume, factor, work / f"{kidney}.npy", kidney, chunk)
        if engine_3d is None:
            score, threshold, value_range = prob, float(cfg.threshold), (0.0, 1.0)

            def score_of(z, prob=prob):
                return np.asarray(prob[z])
        else:
            prob_3d = predict_at(engine_3d, volume, factor, work / f"{kidney}_3d.npy", kidney, chunk)
            threshold, value_range = float(blend["threshold"]), SCORE_RANGE[blend["mode"]]

            def score_of(z, prob=prob, prob_3d=prob_3d):
                return blend_score_slice(prob[z], prob_3d[z], **blend)

            score = None
        if mode == "fixed" and min_size <= 0:
            def mask_of(z, score_of=score_of, threshold=threshold):
                return score_of(z) > threshold
        else:
            if score is None:  # the blend's score, stored for the passes of post-processing (float16, like the probabilities)
                score = np.lib.format.open_memmap(work / f"{kidney}_score.npy", mode="w+", dtype=np.float16, shape=volume.shape)
                for z in range(volume.shape[0]):
                    score[z] = score_of(z)
                score.flush()
            mask = np.lib.format.open_memmap(work / f"{kidney}_mask.npy", mode="w+", dtype=np.uint8, shape=volume.shape)
            mask, used = postprocess_volume(score, mode, threshold, float(post.get("top_fraction", 0.002)), min_size, out=mask,
                                            value_range=value_range)
            log.info("%s: threshold %.4g (%s)%s", kidney, used, mode, f", components under {min_size} voxels removed" if min_size > 0 else "")

            def mask_of(z, mask=mask):
                return np.asarray(mask[z]) > 0
        rles.update(submission_rows(kidney, volume.first, len(volume), mask_of, per_kidney[kidney]))
        log.info("%s: %d slices predicted", kidney, len(volume))
        del prob, score, score_of, mask_of
    out = Path(cfg.output)
    write_submission(rles, order, out)
    if not cfg.keep_probabilities:
        shutil.rmtree(run_dir / "probabilities", ignore_errors=True)
    print(f"wrote {len(order)} rows to {out}")
    return out


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "configs"), config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        predict(cfg)
    except Exception as err:
        user = find_user_error(err)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
