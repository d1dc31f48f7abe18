"""Does a model carry over? Train the demo model on data from an independently written generator and
score it, through ``python -m src.predict``, on that generator's test kidneys.

    python -m benchmarks.carryover [--out data/foreign] [--seed 0] [--work logs/carryover] [HYDRA_OVERRIDES...]

Steps, each the command a user runs: :mod:`benchmarks.foreign_phantom` writes a dataset in the Kaggle
layout (its own kidney shapes, vessel trees, intensity windows, a kidney_6 resampled to 63.08 um, and
the test truth in ``solution.csv``); ``generate_mutliview.py``; ``python -m src.train experiment=demo
data.fold=0`` (plus the overrides given); ``python -m src.predict`` with the run's best checkpoint on
the test kidneys; Kaggle's scorer. It prints, per kidney, the model next to the best global intensity
threshold (tuned on the kidney itself), the run's ``val/sd@<th>`` for the predicted checkpoint at the
threshold predict applies to it (the demo's: the one its validation scored best) next to the same kidney
predicted by ``python -m src.calibrate`` at that threshold (the two must agree: same weights, same
volume), and one JSON object last. About 15-20 minutes on 2 CPU cores; finished steps are reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from src.utils.settings import REPO_ROOT


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO_ROOT / "data" / "foreign"), help="where the foreign dataset is written")
    parser.add_argument("--seed", type=int, default=0, help="seed of the foreign dataset")
    parser.add_argument("--work", default=str(REPO_ROOT / "logs" / "carryover"), help="runs and submissions")
    parser.add_argument("train_overrides", nargs="*", help="extra Hydra overrides for the training run")
    args = parser.parse_args(argv)

    from benchmarks.foreign_phantom import main as make_foreign
    from src.data.registry import Registry
    from src.data.volumes import VolumeStore
    from src.inference.checkpoints import best_checkpoint_in, checkpoint_threshold
    from src.metrics.baseline import best_threshold, threshold_baseline
    from src.pipelines.common import ensure_run, run, score_csv
    from src.pipelines.demo import validation_of

    data, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not (data / "solution.csv").exists():
        print(f"== foreign dataset (seed {args.seed}) -> {data}")
        shutil.rmtree(data, ignore_errors=True)
        make_foreign(["--out", str(data), "--seed", str(args.seed)])
    print("== projections: generate_mutliview.py")
    run([sys.executable, "generate_mutliview.py", str(data), "--quiet"])

    run_dir = work / "train"
    print(f"== python -m src.train experiment=demo data.fold=0 -> {run_dir}")
    ensure_run(run_dir, ["experiment=demo", "data.fold=0", f"paths.data_dir={data}", *args.train_overrides], time.perf_counter())
    checkpoint = best_checkpoint_in(run_dir / "checkpoints")
    threshold, source = checkpoint_threshold(checkpoint)  # what predict's default threshold=checkpoint applies
    val = validation_of(run_dir / "metrics.csv", checkpoint, f"val/sd@{threshold:g}")

    print(f"== python -m src.calibrate and src.predict with {checkpoint.name}")
    calibrated = work / "calibrate"
    shutil.rmtree(calibrated, ignore_errors=True)
    run([sys.executable, "-m", "src.calibrate", "fold=0", f"checkpoints=[{checkpoint}]", f"paths.data_dir={data}", "engine.views=[z]",
         f"thresholds=[{threshold}]", "top_fractions=[]", "progress=false", f"hydra.run.dir={calibrated}"])
    calibration = json.loads((calibrated / "calibration.json").read_text())
    through_calibrate = float(next(r["surface_dice"] for r in calibration["rows"] if r["mode"] == "fixed"))
    submission = work / "submission.csv"
    run([sys.executable, "-m", "src.predict", f"checkpoints=[{checkpoint}]", f"paths.data_dir={data}", f"output={submission}",
         "progress=false", f"hydra.run.dir={work / 'predict'}"])
    scores = score_csv(submission, data / "solution.csv")

    store, registry = VolumeStore(progress=False), Registry.load()
    result = {"threshold": threshold, "val_sd": val, "val_sd_through_calibrate": through_calibrate}
    print(f"\npredict's threshold for {checkpoint.name}: {threshold:g} ({source})")
    print(f"validation kidney (fold 0): training's val/sd@{threshold:g} {val:.4f}, the same kidney through src.calibrate "
          f"{through_calibrate:.4f}")
    print(f"{'kidney':<10}{'model':>8}{'threshold baseline':>20}{'ratio':>8}")
    for kidney, score in scores.items():
        image = store.open(data / "test" / kidney / "images")
        truth = store.open(data / "solution" / kidney / "labels", "label")
        _, baseline = best_threshold(threshold_baseline(image, truth.data, registry.label_threshold))
        ratio = score / baseline if baseline > 0 else float("inf")
        print(f"{kidney:<10}{score:>8.4f}{baseline:>20.4f}{ratio:>7.1f}x")
        result.update({kidney: score, f"{kidney}_baseline": baseline, f"{kidney}_ratio": ratio})
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
