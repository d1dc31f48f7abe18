#!/usr/bin/env sh
# Stage 1: the recipe's four 2.5-D runs (EfficientNet-B5 and B6, folds 0 and 1), each on all three
# projections. Data and log folders come from SETTINGS.json; extra Hydra overrides are passed
# through to every run, e.g.  sh train.sh trainer=ddp   or   sh train.sh data.num_workers=4
set -eu
cd "$(dirname "$0")"
. scripts/stage_env.sh
for encoder in tu-tf_efficientnet_b5 tu-tf_efficientnet_b6; do
    for fold in 0 1; do
        "$PYTHON" -m src.train data.fold="$fold" model.net.encoder_name="$encoder" \
            paths.data_dir="$DATA_DIR" paths.log_dir="$LOGS_DIR" "$@"
    done
done
