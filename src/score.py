"""Score a submission like Kaggle does: ``python -m src.score SUBMISSION_CSV SOLUTION_CSV``.

The solution has Kaggle's scorer columns ``id,rle,width,height,image_id,slice_id``; the submission
``id,rle``. Each ``image_id`` (kidney) is stacked from its slices in ``slice_id`` order and scored
with surface Dice at tolerance 0, streaming slice chunks (memory: a few slices). Prints one line per
kidney and, last, ``score <mean over kidneys>``. Missing ids, malformed RLE or an RLE that does not
fit its ``height x width``: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from src.metrics.rle import rle_decode
from src.metrics.surface_dice import SurfaceDiceAccumulator
from src.utils.errors import UserError, cli_main

SOLUTION_COLUMNS = ("id", "rle", "width", "height", "image_id", "slice_id")
SUBMISSION_COLUMNS = ("id", "rle")


def read_csv(path: str | Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"id": str, "rle": str}, keep_default_na=False)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read {what} CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path}: {what} lacks column(s) {', '.join(missing)} (expected {','.join(columns)})")
    duplicated = df["id"][df["id"].duplicated()]
    if len(duplicated):
        raise UserError(f"{path}: duplicate id {duplicated.iloc[0]!r} in {what}")
    return df


def score_submission(
    submission: pd.DataFrame, solution: pd.DataFrame, chunk: int = 16, device: str = "cpu"
) -> dict[str, float]:
    """Surface Dice per ``image_id`` (in order of first appearance in the solution)."""
    for column in ("width", "height", "slice_id"):
        if not pd.api.types.is_integer_dtype(solution[column]):
            raise UserError(f"solution column {column!r} must hold integers, got {solution[column].dtype}")
    rles = dict(zip(submission["id"], submission["rle"]))
    missing = [i for i in solution["id"] if i not in rles]
    if missing:
        raise UserError(f"submission lacks {len(missing)} id(s) of the solution, e.g. {missing[0]!r}")
    scores: dict[str, float] = {}
    for image_id, rows in solution.groupby("image_id", sort=False):
        rows = rows.sort_values("slice_id")
        acc = SurfaceDiceAccumulator(device)
        preds, trues = [], []
        kidney_shape = None
        for row in rows.itertuples(index=False):
            shape = (int(row.height), int(row.width))
            kidney_shape = kidney_shape or shape
            if shape != kidney_shape:
                raise UserError(
                    f"solution id {row.id!r}: slice is {shape[0]}x{shape[1]}, "
                    f"earlier slices of {image_id} are {kidney_shape[0]}x{kidney_shape[1]}"
                )
            rle = rles[row.id]
            if not str(rle).strip():
                raise UserError(f"submission id {row.id!r}: empty RLE (write '1 0' for an empty mask)")
            preds.append(rle_decode(rle, shape, name=f"submission id {row.id!r}"))
            trues.append(rle_decode(row.rle, shape, name=f"solution id {row.id!r}"))
            if len(preds) == chunk:
                acc.update(np.stack(preds), np.stack(trues))
                preds, trues = [], []
        if preds:
            acc.update(np.stack(preds), np.stack(trues))
        scores[str(image_id)] = acc.score()
    return scores


def mean_score(scores: dict[str, float]) -> float:
    values = [v for v in scores.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


@cli_main
def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", help="submission.csv (id,rle)")
    parser.add_argument("solution", help="solution.csv (id,rle,width,height,image_id,slice_id)")
    parser.add_argument("--device", default="cpu", help="torch device for the metric (cpu, cuda, ...)")
    parser.add_argument("--chunk", type=int, default=16, help="slices decoded and scored at a time")
    args = parser.parse_args(argv)
    submission = read_csv(args.submission, SUBMISSION_COLUMNS, "submission")
    solution = read_csv(args.solution, SOLUTION_COLUMNS, "solution")
    extra = set(submission["id"]) - set(solution["id"])
    if extra:
        print(f"warning: {len(extra)} submission id(s) not in the solution are ignored, e.g. {sorted(extra)[0]!r}", file=sys.stderr)
    scores = score_submission(submission, solution, chunk=args.chunk, device=args.device)
    width = max(len(k) for k in scores) if scores else 5
    for image_id, value in scores.items():
        print(f"{image_id:<{width}} {value:.6f}")
    total = mean_score(scores)
    print(f"score {total:.6f}")
    return total


if __name__ == "__main__":
    main()
