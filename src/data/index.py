"""Per-slice index of every volume group present: ``python -m src.data.index RAW_DATA_DIR [--out CSV]``.

Writes ``id,group,slice,height,width,img_path,msk_path`` (paths relative to RAW_DATA_DIR, ``msk_path``
empty for unlabelled groups), one row per slice, groups in registry order. It is the reproducible
replacement of the CSVs the original code shipped; it reads slice headers only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from src.data.registry import Group, Registry
from src.data.volumes import list_slices, slice_shape
from src.utils.errors import UserError, cli_main
from src.utils.files import write_csv_atomic
from src.utils.settings import REPO_ROOT

COLUMNS = ["id", "group", "slice", "height", "width", "img_path", "msk_path"]


def group_rows(group: Group, data_dir: Path) -> list[dict]:
    """Index rows of one group (its labelled slices, or all image slices of an unlabelled group)."""
    images = {int(p.stem): p for p in list_slices(group.images_dir(data_dir))}
    labels_dir = group.labels_dir(data_dir)
    has_labels = labels_dir is not None and group.is_present(data_dir, need_labels=True)
    labels = {int(p.stem): p for p in list_slices(labels_dir)} if has_labels else {}
    if has_labels:
        numbers = sorted(labels)
        missing = [n for n in numbers if n not in images]
        if missing:
            raise UserError(f"{labels[missing[0]]}: no image slice {missing[0]:04d} in {group.images_dir(data_dir)}")
        if not group.images_follow_labels and len(images) != len(labels):
            extra = sorted(set(images) - set(labels))
            raise UserError(f"{group.images_dir(data_dir)}: {len(images)} image slices but {len(labels)} labels "
                            f"(no label for slice {extra[0]:04d})")
    else:
        numbers = sorted(images)
    rows, first_shape = [], None
    for n in numbers:
        img = images[n]
        shape = slice_shape(img)
        first_shape = first_shape or shape
        if shape != first_shape:
            raise UserError(f"{img}: slice is {shape[0]}x{shape[1]}, "
                            f"expected {first_shape[0]}x{first_shape[1]} like the group's first slice")
        msk = labels.get(n)
        rows.append(
            {
                "id": f"{group.name}_{n:04d}",
                "group": group.name,
                "slice": n,
                "height": shape[0],
                "width": shape[1],
                "img_path": img.relative_to(data_dir).as_posix(),
                "msk_path": msk.relative_to(data_dir).as_posix() if msk is not None else "",
            }
        )
    return rows


def build_index(data_dir: str | Path, registry: Registry | None = None) -> pd.DataFrame:
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data directory not found (RAW_DATA_DIR / paths.data_dir)")
    registry = registry or Registry.load()
    rows: list[dict] = []
    for group in registry:
        if group.is_present(data_dir, need_labels=False):
            rows.extend(group_rows(group, data_dir))
    if not rows:
        raise UserError(f"{data_dir}: no volume group of {registry.path.name} found (expected e.g. train/kidney_1_dense/images)")
    return pd.DataFrame(rows, columns=COLUMNS)


@cli_main
def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="RAW_DATA_DIR (the competition download)")
    parser.add_argument("--out", default=str(REPO_ROOT / "data" / "gt_extended.csv"), help="output CSV")
    parser.add_argument("--registry", default=None, help="volume registry YAML (default configs/registry.yaml)")
    args = parser.parse_args(argv)
    df = build_index(args.data_dir, Registry.load(args.registry))
    out = Path(args.out)
    write_csv_atomic(df, out)
    for group, n in df.groupby("group", sort=False).size().items():
        print(f"{group:<40} {n:6d} slices")
    print(f"wrote {len(df)} rows to {out}")
    return out


if __name__ == "__main__":
    main()
