"""Pseudo labels for the external kidney(s) from the stage-1 ensemble (the recipe's defaults):

    python generate_pseudo.py --dataset_folder $(python parse_settings_json.py RAW_DATA_DIR) \\
                              --logs_base_path $(python parse_settings_json.py LOGS_DIR)

Finds the best checkpoint of each stage-1 run (``<logs>/train/runs/<run>/<fold>``), uses each one
plain and with d4 test-time augmentation, predicts every slice along the three axes (sliding window
roi 800, overlap 0.25, gaussian, reflect), averages the weighted logits, and writes
``train_ext/<name>/labels/NNNN.png`` = round(probability * 255), and what wrote them in
``labels_source.json`` beside them. Rerunning with the same models keeps the labels already written and
resumes an interrupted prediction; labels other models wrote stop the run with a one-line error unless
``--overwrite`` (rewrite all) or ``--replace_other`` (rewrite them only when they are other models').
Then run ``generate_mutliview_pseudo.py``.
(``generate_pseudo.py`` at the top level runs this module.)

``--split train`` labels the train kidneys instead (kidney_1_dense, kidney_2, kidney_3_sparse: every
train group with a ``pseudo_labels`` folder in the registry) into ``train/<kidney>/pseudo_labels``,
for ``data.train_pseudo=true``, which fills the vessels their human labels miss (kidney_2 is ~65 %
labelled). Use models that did not train on the kidney being labelled (``--folds 1`` validates on
kidney_2), or the labels only repeat what the model learnt there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.data.registry import VIEWS, Registry
from src.data.volumes import VolumeStore
from src.inference.checkpoints import find_checkpoint, load_member
from src.inference.engine import InferenceEngine, resolve_device
from src.inference.predictor import KidneyPredictor
from src.inference.tta import TTA_MODES
from src.utils.errors import UserError, cli_main

RECIPE_RUNS = (
    "UnetPlusPlus_tu-tf_efficientnet_b5_size_3_512_bs32_hard",
    "UnetPlusPlus_tu-tf_efficientnet_b6_size_3_512_bs32_hard",
)
RECIPE_WEIGHTS = (1.0, 1.5)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_folder", required=True, help="RAW_DATA_DIR")
    p.add_argument("--logs_base_path", default=None, help="LOGS_DIR holding train/runs/<run>/<fold>")
    p.add_argument("--runs", nargs="+", default=list(RECIPE_RUNS), help="stage-1 run names")
    p.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per run (recipe: 1.0 1.5)")
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--checkpoints", nargs="+", default=None, help="explicit checkpoints instead of --runs/--folds")
    p.add_argument("--tta", nargs="+", default=["none", "d4"], choices=TTA_MODES, help="each checkpoint is used once per mode")
    p.add_argument("--roi", type=int, default=800)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--views", nargs="+", default=list(VIEWS), choices=VIEWS)
    p.add_argument("--sw_batch_size", type=int, default=8)
    p.add_argument("--slices_per_batch", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--devices", default="auto",
                   help="auto: every visible GPU (else --device); or comma-separated GPU ids, e.g. 0,1")
    p.add_argument("--split", default="external", choices=("external", "train"),
                   help="external: label the external kidney(s); train: pseudo_labels of the train kidneys")
    p.add_argument("--volumes", nargs="+", default=None, help="groups of the registry (default: every one of --split present)")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--overwrite", action="store_true", help="rewrite every label that already exists")
    p.add_argument("--replace_other", action="store_true",
                   help="rewrite labels other models wrote (their record <labels>_source.json differs or is absent); "
                        "without it such labels stop the run, and labels these models wrote are resumed")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def ensemble(args) -> list:
    device = resolve_device(args.device)
    if args.checkpoints:
        weights = args.weights or [1.0] * len(args.checkpoints)
        if len(weights) != len(args.checkpoints):
            raise UserError(f"--weights needs one value per checkpoint ({len(args.checkpoints)}), got {len(weights)}")
        paths = list(zip(args.checkpoints, weights))
    else:
        if not args.logs_base_path:
            raise UserError("give --logs_base_path (LOGS_DIR) or --checkpoints")
        weights = args.weights or (list(RECIPE_WEIGHTS) if args.runs == list(RECIPE_RUNS) else [1.0] * len(args.runs))
        if len(weights) != len(args.runs):
            raise UserError(f"--weights needs one value per run ({len(args.runs)}), got {len(weights)}")
        paths = [(find_checkpoint(args.logs_base_path, run, fold), w) for run, w in zip(args.runs, weights) for fold in args.folds]
    members = []
    for path, weight in paths:
        for tta in args.tta:
            members.append(load_member(path, weight, tta, device))
    return members


def device_list(text: str):
    """``--devices``: ``auto`` or comma-separated GPU ids (``0,1``) for the engine."""
    if text == "auto":
        return "auto"
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--devices takes auto or comma-separated GPU ids, got {text!r}") from None


@cli_main
def main(argv=None) -> dict:
    args = parse_args(argv)
    data = Path(args.dataset_folder)
    if not data.is_dir():
        raise UserError(f"--dataset_folder {data} is not a folder")
    registry = Registry.load()
    groups = [g for g in registry.base_groups(args.split) if args.volumes is None or g.name in args.volumes]
    if args.split == "train":
        groups = [g for g in groups if g.pseudo_labels]
    if args.volumes:
        unknown = sorted(set(args.volumes) - {g.name for g in groups})
        if unknown:
            choices = [g.name for g in registry.base_groups(args.split) if args.split == "external" or g.pseudo_labels]
            raise UserError(f"--volumes {' '.join(unknown)}: not a {args.split} group that takes pseudo labels "
                            f"(choose from {', '.join(choices)})")
    present = [g for g in groups if g.is_present(data, need_labels=False)]
    if not present:
        raise UserError(f"no {args.split} volume under {data} (looked for {', '.join(g.images for g in groups)})")
    members = ensemble(args)
    for m in members:
        print(f"model {m.name} weight {m.weight} tta {m.tta} in_channels {m.in_channels}")
    engine = InferenceEngine(members, roi_size=args.roi, overlap=args.overlap, sw_batch_size=args.sw_batch_size,
                             slices_per_batch=args.slices_per_batch, views=args.views, device=args.device, progress=not args.quiet,
                             devices=device_list(args.devices))
    store = VolumeStore(args.cache_dir, progress=not args.quiet)
    written = {}
    for group in present:
        volume = store.open(group.images_dir(data))
        labels = group.labels_dir(data) if args.split == "external" else group.pseudo_labels_dir(data)
        predictor = KidneyPredictor.for_labels(engine, labels, registry)
        written[group.name] = predictor.pseudo_labels(volume, group.name, labels, overwrite=args.overwrite,
                                                      replace_other=args.replace_other)
        print(f"{group.name}: wrote {written[group.name]} label slices to {labels} ({len(volume)} in all)")
    return written


if __name__ == "__main__":
    main()
