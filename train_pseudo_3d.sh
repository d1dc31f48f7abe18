#!/usr/bin/env sh
# Stage 2, 3-D: MONAI DynUNet on the competition data plus the pseudo-labelled HOA kidney, folds 0
# and 1. Data and log folders come from SETTINGS.json; extra Hydra overrides are passed through.
set -eu
cd "$(dirname "$0")"
. scripts/stage_env.sh
for fold in 0 1; do
    "$PYTHON" -m src.train recipe=pseudo_3d data.fold="$fold" \
        paths.data_dir="$DATA_DIR" paths.log_dir="$LOGS_DIR" "$@"
done
