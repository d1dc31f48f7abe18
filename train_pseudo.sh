#!/usr/bin/env sh
# The original's best 2-D setup (not submitted): the stage-2 recipe on fold -1 (all labelled kidneys),
# with 1 and with 3 input channels. Paths from SETTINGS.json; extra Hydra overrides are passed through.
set -eu
cd "$(dirname "$0")"
. scripts/stage_env.sh
for channels in 1 3; do
    "$PYTHON" -m src.train recipe=pseudo data.in_channels="$channels" \
        paths.data_dir="$DATA_DIR" paths.log_dir="$LOGS_DIR" "$@"
done
