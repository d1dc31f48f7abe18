"""The end-to-end demo on the built-in phantom: ``python -m src.demo`` (what ``make demo`` runs).

Steps, each a command a user would run on the real data:
  1. ``python -m src.data.phantom --out data/phantom --size small``  (synthetic data, Kaggle layout)
  2. ``python generate_mutliview.py data/phantom``                  (xz/zy projections)
  3. ``python -m src.data.index data/phantom``                      (per-slice index CSV)
  4. ``python -m src.score SUBMISSION solution.csv``                 for a perfect and an empty submission
Every step is idempotent: a second run reuses what the first wrote.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from src.data.index import build_index
from src.data.multiview import project_split
from src.data.phantom import build_phantom
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
    args = parser.parse_args(argv)
    data, work = Path(args.out), Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    t = step(f"1/4 phantom dataset ({args.size}, seed {args.seed}) -> {data}")
    summary = build_phantom(data, seed=args.seed, size=args.size)
    for name, entry in summary["kidneys"].items():
        print(f"  {name:<48} {'x'.join(map(str, entry['shape']))}  {entry['voxel_um']} um")
    print(f"  {'reused' if summary['existed'] else 'built'} in {time.perf_counter() - t:.1f} s")

    t = step("2/4 multiview projections (generate_mutliview.py)")
    project_split(data, ("train",), store=VolumeStore(progress=not args.quiet), progress=not args.quiet)
    print(f"  done in {time.perf_counter() - t:.1f} s")

    t = step("3/4 slice index (src.data.index)")
    index = build_index(data)
    write_csv_atomic(index, data / "gt_extended.csv")
    print(f"  {len(index)} slices in {index.group.nunique()} groups -> {data / 'gt_extended.csv'} ({time.perf_counter() - t:.1f} s)")

    step("4/4 scorer (src.score) on the test kidneys' solution.csv")
    solution = data / "solution.csv"
    perfect = work / "submission_perfect.csv"
    pd.read_csv(solution, keep_default_na=False)[["id", "rle"]].to_csv(perfect, index=False)
    print(f"  perfect submission ({perfect}):")
    s_perfect = score_file(perfect, solution)
    print(f"  empty submission ({data / 'sample_submission.csv'}):")
    s_empty = score_file(data / "sample_submission.csv", solution)
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s: perfect {s_perfect:.4f}, empty {s_empty:.4f}")
    return {"perfect": s_perfect, "empty": s_empty}


if __name__ == "__main__":
    main()
