"""submission.csv: one row per id of sample_submission.csv, in its order, RLE of each predicted slice."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from src.metrics.rle import rle_encode
from src.utils.errors import UserError

_ID = re.compile(r"^(?P<kidney>.+)_(?P<slice>\d+)$")


def parse_ids(ids) -> pd.DataFrame:
    """(id, kidney, slice) of submission ids ``<kidney>_<NNNN>``; malformed ids are a UserError."""
    rows = []
    for i in ids:
        m = _ID.match(str(i))
        if not m:
            raise UserError(f"sample_submission id {i!r} is not <kidney>_<slice number>")
        rows.append((str(i), m["kidney"], int(m["slice"])))
    return pd.DataFrame(rows, columns=["id", "kidney", "slice"])


def read_sample_submission(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    except FileNotFoundError:
        raise UserError(f"{path}: sample_submission.csv not found (set sample_submission=null to write every test slice)") from None
    if "id" not in df.columns:
        raise UserError(f"{path}: no 'id' column")
    return parse_ids(df["id"])


def check_against_volumes(wanted: pd.DataFrame, slices: dict[str, range], source: str) -> None:
    """Every id of ``wanted`` must name a predicted kidney and one of its slices."""
    unknown = sorted(set(wanted.kidney) - set(slices))
    if unknown:
        raise UserError(f"{source} lists kidney {unknown[0]!r}, which is not among the test volumes ({', '.join(slices) or 'none'})")
    for kidney, rows in wanted.groupby("kidney"):
        bad = rows[~rows.slice.isin(list(slices[kidney]))]
        if len(bad):
            r = slices[kidney]
            raise UserError(f"{source} lists {bad.id.iloc[0]!r}, but {kidney} has slices {r.start:04d}-{r.stop - 1:04d}")


def submission_rows(kidney: str, first: int, depth: int, mask_of, wanted: set[int] | None = None) -> dict[str, str]:
    """id -> RLE of ``mask_of(z)`` (a binary slice) for the ``depth`` slices of one kidney, slice
    numbers from ``first``, one slice at a time."""
    out = {}
    for z in range(depth):
        n = first + z
        if wanted is None or n in wanted:
            out[f"{kidney}_{n:04d}"] = rle_encode(mask_of(z))
    return out


def write_submission(rles: dict[str, str], order: list[str], path: Path) -> pd.DataFrame:
    from src.utils.files import write_csv_atomic

    missing = [i for i in order if i not in rles]
    if missing:
        raise UserError(f"no prediction for submission id {missing[0]!r} ({len(missing)} missing)")
    df = pd.DataFrame({"id": order, "rle": [rles[i] for i in order]})
    write_csv_atomic(df, Path(path))
    return df
