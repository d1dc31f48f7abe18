"""What the demo and the robustness table share: training runs that are reused when finished, and scoring.

Both pipelines run the project's commands as a user would (``python -m src.train`` in a subprocess) and
score submissions with the Kaggle scorer (:mod:`src.score`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from src.utils.settings import REPO_ROOT


def add_training_overrides(parser: argparse.ArgumentParser, runs_2d: str) -> None:
    """The extra Hydra overrides a pipeline passes to its 2-D training runs (``runs_2d`` says which) and to its 3-D run."""
    parser.add_argument("train_overrides", nargs="*", help=f"extra Hydra overrides for {runs_2d}")
    parser.add_argument("--train-3d", dest="train_3d_overrides", nargs="*", default=[], help="extra Hydra overrides for the 3-D run")


def run(command: list[str]) -> None:
    """Run ``command`` from the checkout, printed without the interpreter; a failure raises."""
    print("  " + " ".join(command[1:]))
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def ensure_run(run_dir: Path, overrides: list[str], started: float) -> None:
    """``python -m src.train`` into ``run_dir`` unless a finished run (its metrics.json) is there."""
    if (run_dir / "metrics.json").exists():
        print("  reused the finished run")
        return
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run of ours
    run([sys.executable, "-m", "src.train", *overrides, f"hydra.run.dir={run_dir}", "extras.print_config=false"])
    print(f"  trained in {time.perf_counter() - started:.0f} s")


def trained_size(run_dir: Path) -> int:
    """The ``data.img_size`` a finished run trained at (the window its model predicts with)."""
    return int(yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["img_size"])


def score_csv(submission: Path, solution: Path) -> dict[str, float]:
    """Surface Dice per kidney of the ``submission`` CSV against the ``solution`` CSV (Kaggle's scorer)."""
    from src.score import SOLUTION_COLUMNS, SUBMISSION_COLUMNS, read_csv, score_submission

    return score_submission(read_csv(submission, SUBMISSION_COLUMNS, "submission"), read_csv(solution, SOLUTION_COLUMNS, "solution"))
