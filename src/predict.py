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
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.utils.errors import UserError, cli_main
from src.utils.resolvers import register_resolvers
from src.utils.settings import REPO_ROOT

register_resolvers()
log = logging.getLogger(__name__)


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
    from src.data.registry import Registry
    from src.data.volumes import VolumeStore
    from src.inference.decision import build_engines, check_postprocess, kidney_probabilities, mask_of, score_of
    from src.inference.submission import check_against_volumes, read_sample_submission, submission_rows, write_submission

    engine, engine_3d = build_engines(cfg)
    check_postprocess(cfg.get("postprocess"))
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
        prob, prob_3d = kidney_probabilities(engine, engine_3d, volume, kidney, work, cfg.get("resolution"), registry)
        score = score_of(prob, prob_3d, cfg.threshold, cfg.blend)
        decide = mask_of(score, volume.shape, cfg.get("postprocess"), work, kidney)
        rles.update(submission_rows(kidney, volume.first, len(volume), decide, per_kidney[kidney]))
        log.info("%s: %d slices predicted", kidney, len(volume))
        del prob, prob_3d, score, decide
        if not cfg.keep_probabilities:  # free the disk before the next kidney (a real one takes GBs)
            for path in work.glob(f"{kidney}*.npy"):
                path.unlink()
    out = Path(cfg.output)
    write_submission(rles, order, out)
    if not cfg.keep_probabilities:
        shutil.rmtree(run_dir / "probabilities", ignore_errors=True)
    print(f"wrote {len(order)} rows to {out}")
    return out


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "configs"), config_name="predict")
@cli_main  # a user mistake (even wrapped by Hydra or OmegaConf) becomes one line and exit status 2
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
