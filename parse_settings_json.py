"""Print a path from SETTINGS.json as an absolute path: ``python parse_settings_json.py RAW_DATA_DIR``."""

import argparse

from src.utils.errors import cli_main
from src.utils.settings import setting


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("key", help="RAW_DATA_DIR, LOGS_DIR, MODEL_CHECKPOINT_DIR or SUBMISSION_DIR")
    parser.add_argument("--settings", default=None, help="another SETTINGS.json (default: the repo's)")
    args = parser.parse_args(argv)
    print(setting(args.key, args.settings))


if __name__ == "__main__":
    main()
