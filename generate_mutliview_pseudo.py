"""Write the _xz/_zy projections of the external volumes whose pseudo labels exist:
``python generate_mutliview_pseudo.py RAW_DATA_DIR`` (train_ext/<name>/labels/*.png, images jp2)."""

from generate_mutliview import run
from src.utils.errors import cli_main

SPLITS = ("external",)


@cli_main
def main(argv=None):
    return run(SPLITS, argv, __doc__)


if __name__ == "__main__":
    main()
