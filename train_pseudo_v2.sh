#!/usr/bin/env sh
# Stage 2, 2-D: UNet++ B5 (scSE) on the competition data plus the pseudo-labelled HOA kidney, folds 0
# and 1 (run generate_pseudo.py and generate_mutliview_pseudo.py first). Data and log folders come
# from SETTINGS.json; extra Hydra overrides are passed through, e.g.  sh train_pseudo_v2.sh trainer=ddp
set -eu
cd "$(dirname "$0")"
. scripts/stage_env.sh
for fold in 0 1; do
    "$PYTHON" -m src.train recipe=pseudo_v2 data.fold="$fold" \
        paths.data_dir="$DATA_DIR" paths.log_dir="$LOGS_DIR" "$@"
done
