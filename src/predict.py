"""Predict every test kidney and write ``submission.csv``:

    python -m src.predict checkpoints=[a.ckpt,b.ckpt] weights=[1,1.5] tta=d4 \\
        paths.data_dir=data/blood-vessel-segmentation output=data/submissions/submission.csv

Every ``<test_dir>/<kidney>/images`` folder is a test volume. The inference engine averages the
ensemble over the three views into a float16 probability memory map in the run folder, which is
thresholded slice by slice into RLE rows (with 3-D checkpoints, ``checkpoints_3d=[...]``, the 3-D
probabilities are blended in as the 4th place submitted: see ``src/inference/blend.py``); the rows
follow ``sample_submission.csv`` (every id present, ``1 0`` for an empty slice). Works with the public
download's 3 slices per kidney.

``probabilities_from=<folder>`` runs no network: it reads the probabilities an earlier run of the same ensemble
kept (``keep_probabilities=true``: ``<its run folder>/probabilities``) and applies this run's threshold, blend
and post-processing, to try decision settings in seconds.

``estimate=true`` predicts nothing: it times a few batches per model and view on the present device(s)
and prints the estimated time for every test kidney, to check an ensemble against Kaggle's 9 hours
(``estimate_budget_h``).

Beyond the submitted recipe, all off by default (README "Robustness levers"):
``resolution.rescale=true`` predicts each kidney at the training voxel size and rescales the
probabilities back (:mod:`src.inference.resolution`); ``postprocess.threshold_mode=top_fraction``
keeps the top ``postprocess.top_fraction`` of voxels per kidney instead of a fixed threshold;
``postprocess.min_component_size=N`` removes 3-D connected components under N voxels
(:mod:`src.inference.postprocess`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.utils.entry import hydra_main
from src.utils.errors import UserError

log = logging.getLogger(__name__)


def test_volumes(test_dir: Path) -> dict[str, Path]:
    """kidney name -> images folder, for every ``test_dir/<kidney>/images``."""
    if not test_dir.is_dir():
        raise UserError(f"{test_dir}: test folder not found (set paths.data_dir or test_dir)")
    found = {p.name: p / "images" for p in sorted(test_dir.iterdir()) if (p / "images").is_dir()}
    if not found:
        raise UserError(f"{test_dir}: no <kidney>/images folder")
    return found


def test_shapes(folders: dict[str, Path]) -> dict[str, tuple[int, int, int]]:
    """kidney -> (slices, height, width) from the file list and one slice header (nothing decoded)."""
    from src.data.volumes import list_slices, slice_shape

    out = {}
    for kidney, folder in folders.items():
        files = list_slices(folder)
        out[kidney] = (len(files), *slice_shape(files[0]))
    return out


def estimate(cfg: DictConfig) -> float:
    """Print the estimated time of the configured 2-D ensemble on every test kidney; returns seconds."""
    from src.inference.predictor import KidneyPredictor

    predictor = KidneyPredictor.from_config(cfg)
    engine = predictor.engine
    shapes = test_shapes(test_volumes(Path(cfg.test_dir)))
    devices = ", ".join(str(r.device) for r in engine.replicas)
    print(f"estimate: {len(engine.members)} model(s), views {'/'.join(engine.views)}, tta {'/'.join(m.tta for m in engine.members)}, "
          f"windows {'/'.join('x'.join(map(str, r)) for r in engine.rois)}, on {devices}")
    print(f"  {'kidney':<12}{'view':<6}{'slices':>8}{'slice':>12}{'ms/slice':>10}{'minutes':>10}")
    total = 0.0
    for row in predictor.estimate(shapes, repeats=int(cfg.get("estimate_repeats", 2))):
        total += row["seconds"]
        print(f"  {row['volume']:<12}{row['view']:<6}{row['slices']:>8}{'x'.join(map(str, row['slice_shape'])):>12}"
              f"{1000 * row['s_per_slice']:>10.1f}{row['seconds'] / 60:>10.1f}")
    budget = float(cfg.get("estimate_budget_h", 9.0)) * 3600
    print(f"  2-D total {total / 3600:.2f} h of a {budget / 3600:g} h budget ({100 * total / budget:.0f} %)"
          + ("; 3-D models are not included" if predictor.engine_3d is not None else ""))
    return total


KEPT_ENGINE = ("roi_size", "overlap", "mode", "padding_mode")  # the 2-D engine's settings that change the probabilities
KEPT_ENGINE_3D = ("roi_size", "overlap", "mode")
KEPT_MEMORY_ONLY = {"resolution": ("chunk",)}  # settings in the record that change memory use, not the probabilities


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def kept_models(cfg: DictConfig) -> dict:
    """What made a run's probabilities: its checkpoints and the settings that change the probabilities (not those
    that change only memory or speed: batch sizes, devices, pipelining)."""
    def resolved(paths):
        return [str(Path(c).resolve()) for c in (paths or [])]

    return {"checkpoints": resolved(cfg.checkpoints), "checkpoints_3d": resolved(cfg.get("checkpoints_3d")),
            **{k: _plain(cfg.get(k)) for k in ("weights", "tta", "weights_3d", "tta_3d", "resolution")},
            "views": list(cfg.engine.views),
            "engine": {k: _plain(cfg.engine.get(k)) for k in KEPT_ENGINE},
            "engine_3d": {k: _plain(cfg.engine_3d.get(k)) for k in KEPT_ENGINE_3D}}


def check_kept_models(cfg: DictConfig, folder: Path) -> None:
    """A one-line error when the run that kept ``folder`` made its probabilities with other checkpoints or
    other settings that change them (weights, tta, views, resolution) than this run has: the decision would
    be reported under settings that did not make it. A setting the record lacks is not checked (a folder kept
    before the record existed is trusted)."""
    from src.inference.predictor import KEPT_MODELS

    record = folder / KEPT_MODELS
    if not record.is_file():
        return
    made, now = json.loads(record.read_text()), kept_models(cfg)
    for key, value in now.items():
        if key not in made:
            continue
        kept, wanted = made[key], value
        if isinstance(kept, dict) and isinstance(wanted, dict):
            kept, wanted = ({k: v for k, v in d.items() if k not in KEPT_MEMORY_ONLY.get(key, ())} for d in (kept, wanted))
        if kept != wanted:
            raise UserError(f"probabilities_from={folder}: kept by a run with {key}={kept}, this run has {wanted}; "
                            f"pass the same {key} (the kept run's settings are in {record.name} there)")


def predict(cfg: DictConfig) -> Path:
    """Run the configured ensemble on the test kidneys; returns the submission path."""
    from src.data.volumes import VolumeStore
    from src.inference.predictor import KEPT_MODELS, KidneyPredictor
    from src.inference.submission import check_against_volumes, read_sample_submission, write_submission

    predictor = KidneyPredictor.from_config(cfg)
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
    kept = cfg.get("probabilities_from")
    if kept:
        check_kept_models(cfg, Path(kept))
    rles: dict[str, str] = {}
    for kidney, volume in volumes.items():
        if kidney not in per_kidney:
            log.info("%s is not in the sample submission, skipped", kidney)
            continue
        if kept:
            predictor.score(volume, kidney, probabilities=predictor.kept_probabilities(kept, volume, kidney))
        rles.update(predictor.rows(volume, kidney, per_kidney[kidney]))
        log.info("%s: %d slices %s", kidney, len(volume), "decided from kept probabilities" if kept else "predicted")
        if not cfg.keep_probabilities:  # free the disk before the next kidney (a real one takes GBs)
            predictor.forget(kidney)
    out = Path(cfg.output)
    write_submission(rles, order, out)
    if not cfg.keep_probabilities:
        shutil.rmtree(predictor.work, ignore_errors=True)
    elif not kept:
        (predictor.work / KEPT_MODELS).write_text(json.dumps(kept_models(cfg), indent=1))
    print(f"wrote {len(order)} rows to {out}")
    return out


@hydra_main("predict")
def main(cfg: DictConfig) -> None:
    if cfg.get("estimate"):
        estimate(cfg)
    else:
        predict(cfg)


if __name__ == "__main__":
    main()
