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


RUN_SETTINGS = ("seed", "data", "model", "trainer")  # what makes a finished run the one asked for (not paths or logging)


def _flat(value, prefix: str = "") -> dict:
    """Nested settings as ``{"a.b": value}``; folders (keys ending in ``_dir``) as absolute paths from the checkout."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    key = prefix.rstrip(".")
    if key.endswith("_dir") and isinstance(value, str):
        return {key: str((REPO_ROOT / value).resolve())}
    return {key: value}


def changed_settings(run_dir: Path, overrides: list[str]) -> list[str]:
    """``key: saved -> now`` for each setting of :data:`RUN_SETTINGS` where the finished run in ``run_dir``
    (its resolved ``config.yaml``) differs from what ``python -m src.train <overrides>`` composes today (a
    changed default config or override); empty when they agree or the run saved no config."""
    from src.utils.entry import compose_config, resolved_config

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return []
    saved = yaml.safe_load(saved_file.read_text()) or {}
    cfg = compose_config("train", [o for o in overrides if not o.startswith("hydra.")], (REPO_ROOT / run_dir).resolve())
    before, after = _flat({k: saved.get(k) for k in RUN_SETTINGS}), _flat(resolved_config(cfg, RUN_SETTINGS))
    return [f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def ensure_run(run_dir: Path, overrides: list[str], started: float) -> None:
    """``python -m src.train`` into ``run_dir`` unless a finished run (its metrics.json) with the same settings
    is there; a finished run trained with other settings (:func:`changed_settings`) is trained again."""
    if (run_dir / "metrics.json").exists():
        changed = changed_settings(run_dir, overrides)
        if not changed:
            print("  reused the finished run")
            return
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        print(f"  the finished run there was trained with other settings ({shown}): training again")
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run of ours, or one of other settings
    run([sys.executable, "-m", "src.train", *overrides, f"hydra.run.dir={run_dir}", "extras.print_config=false"])
    print(f"  trained in {time.perf_counter() - started:.0f} s")


def trained_size(run_dir: Path) -> int:
    """The ``data.img_size`` a finished run trained at (the window its model predicts with)."""
    return int(yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["img_size"])


def score_csv(submission: Path, solution: Path) -> dict[str, float]:
    """Surface Dice per kidney of the ``submission`` CSV against the ``solution`` CSV (Kaggle's scorer)."""
    from src.score import SOLUTION_COLUMNS, SUBMISSION_COLUMNS, read_csv, score_submission

    return score_submission(read_csv(submission, SUBMISSION_COLUMNS, "submission"), read_csv(solution, SOLUTION_COLUMNS, "solution"))


def label_external(data: Path, checkpoint: Path, roi: int, quiet: bool = False) -> None:
    """Pseudo labels of the external kidney from ``checkpoint`` (``generate_pseudo.py``, no test-time
    augmentation, windows of ``roi``) and their projections.

    Labels this checkpoint already wrote into ``data`` are kept (an interrupted run resumes); labels another
    model wrote there (a previous demo, another seed of ``make eval-robustness``) are rewritten
    (``--replace_other``: their record ``labels_source.json`` names other checkpoints), and so are their
    projections (which copy the record)."""
    from src.data.multiview import project_split
    from src.data.volumes import VolumeStore
    from src.pseudo import main as generate_pseudo

    argv = ["--dataset_folder", str(data), "--checkpoints", str(checkpoint), "--tta", "none", "--roi", str(roi),
            "--replace_other"]
    print("  generate_pseudo.py " + " ".join(argv))
    generate_pseudo(argv + (["--quiet"] if quiet else []))
    project_split(data, ("external",), store=VolumeStore(progress=not quiet), progress=not quiet)
