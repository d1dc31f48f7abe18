"""The end-to-end demo on the built-in phantom: ``python -m src.demo`` (what ``make demo`` runs).

Steps, each a command a user would run on the real data:
  1. ``python -m src.data.phantom --out data/phantom --size small``  (synthetic data, Kaggle layout)
  2. ``python generate_mutliview.py data/phantom``                  (xz/zy projections)
  3. ``python -m src.data.index data/phantom``                      (per-slice index CSV)
  4. ``python -m src.score SUBMISSION solution.csv``                 for a perfect and an empty submission
  5. ``python -m src.train experiment=demo paths.data_dir=data/phantom``  (stage 1, fold 0, on the CPU)
     and the best global intensity threshold on the same validation volume, for comparison.
Every step is idempotent: a second run reuses what the first wrote (a finished training included).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from src.data.index import build_index
from src.data.multiview import project_split
from src.data.phantom import build_phantom
from src.data.registry import Registry
from src.metrics.baseline import best_threshold, threshold_baseline
from src.data.volumes import VolumeStore
from src.score import mean_score, read_csv, score_submission, SOLUTION_COLUMNS, SUBMISSION_COLUMNS
from src.utils.errors import cli_main
from src.utils.files import write_csv_atomic
from src.utils.settings import REPO_ROOT


def step(title: str) -> float:
    print(f"\n== {title}")
    return time.perf_counter()


def score_file(submission: Path, solution: Path) -> float:
    scores = score_submission(read_csv(submission, SUBMISSION_COLUMNS, "submission"), read_csv(solution, SOLUTION_COLUMNS, "solution"))
    for kidney, value in scores.items():
        print(f"  {kidney:<10} {value:.6f}")
    total = mean_score(scores)
    print(f"  score      {total:.6f}")
    return total


@cli_main
def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO_ROOT / "data" / "phantom"), help="phantom dataset folder")
    parser.add_argument("--size", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=str(REPO_ROOT / "logs" / "demo"), help="where submissions are written")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--skip-train", action="store_true", help="stop after the scorer check")
    parser.add_argument("--fold", type=int, default=0, help="stage-1 fold to train")
    parser.add_argument("train_overrides", nargs="*", help="extra Hydra overrides for the stage-1 run")
    args = parser.parse_args(argv)
    data, work = Path(args.out), Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    t = step(f"1/5 phantom dataset ({args.size}, seed {args.seed}) -> {data}")
    summary = build_phantom(data, seed=args.seed, size=args.size)
    for name, entry in summary["kidneys"].items():
        print(f"  {name:<48} {'x'.join(map(str, entry['shape']))}  {entry['voxel_um']} um")
    print(f"  {'reused' if summary['existed'] else 'built'} in {time.perf_counter() - t:.1f} s")

    t = step("2/5 multiview projections (generate_mutliview.py)")
    project_split(data, ("train",), store=VolumeStore(progress=not args.quiet), progress=not args.quiet)
    print(f"  done in {time.perf_counter() - t:.1f} s")

    t = step("3/5 slice index (src.data.index)")
    index = build_index(data)
    write_csv_atomic(index, data / "gt_extended.csv")
    print(f"  {len(index)} slices in {index.group.nunique()} groups -> {data / 'gt_extended.csv'} ({time.perf_counter() - t:.1f} s)")

    step("4/5 scorer (src.score) on the test kidneys' solution.csv")
    solution = data / "solution.csv"
    perfect = work / "submission_perfect.csv"
    pd.read_csv(solution, keep_default_na=False)[["id", "rle"]].to_csv(perfect, index=False)
    print(f"  perfect submission ({perfect}):")
    s_perfect = score_file(perfect, solution)
    print(f"  empty submission ({data / 'sample_submission.csv'}):")
    s_empty = score_file(data / "sample_submission.csv", solution)
    results = {"perfect": s_perfect, "empty": s_empty}
    if not args.skip_train:
        results.update(stage1(data, work, args.fold, args.train_overrides))
    summary = ", ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float))
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s: {summary}")
    return results


def best_validation(metrics_csv: Path) -> tuple[int, str, float]:
    """(epoch, metric, value) of the best ``val/sd@<th>`` over every logged epoch and threshold."""
    df = pd.read_csv(metrics_csv)
    columns = [c for c in df.columns if c.startswith("val/sd@")]
    rows = df.dropna(subset=columns, how="all")
    values = rows[columns]
    column = values.max().idxmax()
    row = values[column].idxmax()
    return int(rows.loc[row, "epoch"]), column, float(values.loc[row, column])


def stage1(data: Path, work: Path, fold: int, overrides: list[str]) -> dict[str, float]:
    """Train the demo model on ``data`` (reusing a finished run) and compare with the threshold baseline."""
    run = work / "stage1" / f"fold{fold}"
    t = step(f"5/5 stage 1: python -m src.train experiment=demo data.fold={fold} (CPU) -> {run}")
    if not (run / "metrics.json").exists():
        shutil.rmtree(run, ignore_errors=True)  # an interrupted demo run of ours
        command = [sys.executable, "-m", "src.train", "experiment=demo", f"data.fold={fold}", f"paths.data_dir={data}",
                   f"hydra.run.dir={run}", "extras.print_config=false", *overrides]
        print("  " + " ".join(command[1:]))
        subprocess.run(command, check=True, cwd=REPO_ROOT)
        print(f"  trained in {time.perf_counter() - t:.0f} s")
    else:
        print("  reused the finished run")
    epoch, metric, value = best_validation(run / "metrics.csv")
    registry = Registry.load()
    val = registry.fold("2d", fold).val
    image, label = VolumeStore(progress=False).open_pair(val.images_dir(data), val.labels_dir(data), val.images_follow_labels)
    threshold, baseline = best_threshold(threshold_baseline(image, label, registry.label_threshold))
    print(f"  validation volume {val.name} ({len(image)} slices):")
    print(f"  model     best {metric} = {value:.4f} (epoch {epoch})")
    print(f"  baseline  best global intensity threshold {threshold:.2f} on the normalised image: surface dice {baseline:.4f}")
    print(f"  the model {'beats' if value > baseline else 'does NOT beat'} the threshold baseline")
    return {"model_sd": value, "baseline_sd": baseline}


if __name__ == "__main__":
    main()
