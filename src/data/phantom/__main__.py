"""``python -m src.data.phantom``: build the phantom dataset and print one line per folder."""

from __future__ import annotations

import argparse
import sys

import src.data.phantom as phantom
from src.data.phantom.acquisition import STYLES
from src.data.phantom.build import build_phantom
from src.data.phantom.specs import SIZES
from src.utils.errors import cli_main


def summary_lines(summary: dict) -> list[str]:
    """One line per folder: split, shape, voxel size, vessel fraction, labelled fraction."""
    lines = []
    for folder, entry in summary["kidneys"].items():
        shape = "x".join(str(n) for n in entry["shape"])
        labelled = entry["labelled_fraction"]
        has_labels = labelled is not None and entry["labels"]
        label_text = f"labelled {100 * labelled:5.1f} %" if has_labels else "no label files"
        lines.append(
            f"{folder:<46} {entry['split']:<9} {shape:>12}  {entry['voxel_um']:6.2f} um  "
            f"vessels {100 * entry['vessel_fraction']:5.2f} %  {label_text}"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m src.data.phantom", description=phantom.__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to create (RAW_DATA_DIR layout)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", choices=list(SIZES), default="tiny", help="tiny (tests), small (demo), medium (benchmarks)"
    )
    parser.add_argument("--style", choices=list(STYLES), default="A",
                        help="scan family: " + "; ".join(f"{k}: {v.description}" for k, v in STYLES.items()))
    parser.add_argument("--force", action="store_true", help="replace a phantom of another seed, size or style in --out")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    summary = build_phantom(args.out, seed=args.seed, size=args.size, force=args.force, style=args.style)
    if summary["existed"]:
        print(f"{summary['out']} already holds the phantom of seed {args.seed} size {args.size} style {args.style}; nothing written")
    for line in summary_lines(summary):
        print(line)
    print(f"phantom seed {args.seed} size {args.size} style {args.style} in {summary['out']}: {summary['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
