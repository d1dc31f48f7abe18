"""Write the _xz/_zy projections of every labelled training volume: ``python generate_mutliview.py RAW_DATA_DIR``."""

import argparse

from src.data.multiview import project_split
from src.data.volumes import VolumeStore
from src.utils.errors import cli_main

SPLITS = ("train",)


def parse_args(argv=None, description=__doc__):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("data_dir", help="RAW_DATA_DIR, e.g. $(python parse_settings_json.py RAW_DATA_DIR)")
    parser.add_argument("--force", action="store_true", help="rebuild projections that already exist")
    parser.add_argument("--cache-dir", default=None, help="volume cache folder (default: beside the data)")
    parser.add_argument("--workers", type=int, default=2, help="threads reading and writing slices")
    parser.add_argument("--block-mb", type=int, default=0, help="memory per block of output slices (0: a quarter of the volume)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def run(splits, argv=None, description=__doc__):
    args = parse_args(argv, description)
    store = VolumeStore(args.cache_dir, workers=args.workers, progress=not args.quiet)
    return project_split(
        args.data_dir, splits, store=store, force=args.force, block_bytes=args.block_mb * 2**20 or None,
        workers=args.workers, progress=not args.quiet,
    )


@cli_main
def main(argv=None):
    return run(SPLITS, argv)


if __name__ == "__main__":
    main()
