"""Choose the threshold on held-out labels, not on the public leaderboard:

    python -m src.calibrate fold=0 checkpoints=[a.ckpt,b.ckpt] tta=flip [checkpoints_3d=[c.ckpt]]
    python -m src.calibrate fold=0 probabilities=path/kidney_3_dense.npy [probabilities_3d=...]

Predicts (or loads) the probabilities of the fold's validation volume with exactly the ensemble,
engine, blend and resolution settings ``predict`` would use, then scores surface Dice (tolerance 0,
the competition's metric) and Dice for every fixed threshold of ``thresholds`` and every
``top_fractions`` (the threshold keeping that fraction of the voxels), in one streamed pass over the
volume (``postprocess.min_component_size`` applies to every candidate; with it, one pass each).
Prints the table, the best of each mode and the ``predict`` overrides that reproduce it, and writes
``calibration.json`` in the run folder. The probabilities it predicted stay in the run folder for reruns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from src.utils.entry import hydra_main
from src.utils.errors import UserError

log = logging.getLogger(__name__)


def candidates(cfg, score) -> list[dict]:
    from src.inference.postprocess import top_fraction_threshold

    rows = [{"mode": "fixed", "value": float(t), "threshold": float(t)} for t in cfg.thresholds]
    volume = score.volume
    for f in cfg.top_fractions:
        t = top_fraction_threshold(volume, float(f), chunk=int(cfg.chunk), value_range=score.value_range)
        rows.append({"mode": "top_fraction", "value": float(f), "threshold": float(t)})
    return rows


def sweep(rows: list[dict], score, truth, chunk: int, min_size: int, mask_path: Path) -> None:
    """Fill each row's ``surface_dice``, ``dice`` and ``fraction`` (of voxels predicted)."""
    from src.inference.postprocess import postprocess_volume, threshold_chunk
    from src.metrics.surface_dice import SurfaceDiceAccumulator
    from src.utils.progress import track

    volume = score.volume
    depth = volume.shape[0]
    groups = [rows] if min_size <= 0 else [[r] for r in rows]
    for group in groups:
        masks = None
        if min_size > 0:  # each candidate's mask after component removal, then scored like the others
            r = group[0]
            out = np.lib.format.open_memmap(mask_path, mode="w+", dtype=np.uint8, shape=volume.shape)
            masks, _ = postprocess_volume(volume, "fixed", r["threshold"], 0.0, min_size, out=out, value_range=score.value_range)
        accs = [SurfaceDiceAccumulator() for _ in group]
        inter, pred_sum, true_sum = np.zeros(len(group)), np.zeros(len(group)), 0
        for z0 in track(range(0, depth, chunk), -(-depth // chunk), "scoring", len(groups) == 1):
            t = np.asarray(truth.data[z0 : z0 + chunk]) > 127
            true_sum += int(t.sum())
            s = None if masks is not None else np.asarray(volume[z0 : z0 + chunk])
            for i, r in enumerate(group):
                p = np.asarray(masks[z0 : z0 + chunk]) > 0 if masks is not None else threshold_chunk(s, r["threshold"]).astype(bool)
                accs[i].update(p, t)
                inter[i] += np.count_nonzero(p & t)
                pred_sum[i] += np.count_nonzero(p)
        for i, r in enumerate(group):
            r["surface_dice"] = accs[i].score()
            r["dice"] = float(2 * inter[i] / (pred_sum[i] + true_sum)) if pred_sum[i] + true_sum else float("nan")
            r["fraction"] = float(pred_sum[i] / volume.size)
        del masks


def override_for(row: dict) -> str:
    if row["mode"] == "fixed":
        return f"postprocess.threshold_mode=fixed <threshold>={row['value']:g}"
    return f"postprocess.threshold_mode=top_fraction postprocess.top_fraction={row['value']:g}"


def calibrate(cfg: DictConfig) -> dict:
    from rich.console import Console
    from rich.table import Table

    from src.data.registry import Registry
    from src.data.volumes import VolumeStore
    from src.inference.decision import check_postprocess
    from src.inference.predictor import KidneyPredictor, load_probabilities, resolve_threshold

    _, _, min_size = check_postprocess(cfg.get("postprocess"))
    registry = Registry.load()
    group = registry.fold("2d", int(cfg.fold)).val
    data = Path(cfg.paths.data_dir)
    if not group.is_present(data):
        raise UserError(f"fold {cfg.fold}: validation volume {group.name} not found under {data} ({group.labels})")
    image, truth = VolumeStore(cfg.paths.cache_dir, progress=cfg.progress).open_pair(
        group.images_dir(data), group.labels_dir(data), group.images_follow_labels, group.label_kind)
    run_dir = Path(cfg.paths.output_dir)
    if cfg.probabilities:
        name = f"the validation volume {group.name}"
        prob = load_probabilities(cfg.probabilities, image.shape, "probabilities", name)
        prob_3d = load_probabilities(cfg.probabilities_3d, image.shape, "probabilities_3d", name) if cfg.probabilities_3d else None
        threshold = resolve_threshold(cfg.threshold, [])  # the sweep sets its own; `checkpoint` with no model: 0.5
        predictor = KidneyPredictor(None, None, run_dir / "probabilities", threshold, cfg.blend, cfg.get("postprocess"),
                                    cfg.get("resolution"), registry)
    else:
        if not cfg.checkpoints:
            raise UserError("nothing to calibrate: pass checkpoints=[...] (and checkpoints_3d=[...]) or probabilities=<file.npy>")
        predictor = KidneyPredictor.from_config(cfg)
        prob, prob_3d = predictor.probabilities(image, group.name)
        print(f"probabilities of {group.name} kept in {predictor.work} (rerun with probabilities={predictor.path(group.name)})")
    work = predictor.work
    work.mkdir(parents=True, exist_ok=True)
    score = predictor.score(image, group.name, probabilities=(prob, prob_3d))
    predictor.stored_score(image, group.name)
    rows = candidates(cfg, score)
    sweep(rows, score, truth, int(cfg.chunk), min_size, predictor.path(group.name, "_mask"))
    finite = [r for r in rows if r["surface_dice"] == r["surface_dice"]]
    if not finite:
        raise UserError(f"{group.name}: every candidate scored NaN (no vessels predicted nor labelled)")
    best = {m: max((r for r in finite if r["mode"] == m), key=lambda r: r["surface_dice"], default=None) for m in ("fixed", "top_fraction")}
    what = "2-D + 3-D blend score" if prob_3d is not None else "2-D probability"
    table = Table(title=f"fold {cfg.fold}, {group.name}: {what}" + (f", components < {min_size} removed" if min_size > 0 else ""))
    for col in ("mode", "value", "threshold", "voxels kept", "surface Dice", "Dice"):
        table.add_column(col, justify="right")
    for r in rows:
        star = " *" if r is best.get(r["mode"]) else ""
        table.add_row(r["mode"], f"{r['value']:g}", f"{r['threshold']:.4f}", f"{100 * r['fraction']:.3f} %",
                      f"{r['surface_dice']:.4f}{star}", f"{r['dice']:.4f}")
    Console().print(table)
    thr_key = "blend.threshold" if prob_3d is not None else "threshold"
    for mode, r in best.items():
        if r is not None:
            print(f"best {mode}: surface Dice {r['surface_dice']:.4f} -> {override_for(r).replace('<threshold>', thr_key)}")
            values = [c["value"] for c in rows if c["mode"] == mode]
            if len(values) > 1 and r["value"] in (min(values), max(values)):
                key = "thresholds" if mode == "fixed" else "top_fractions"
                print(f"  note: {r['value']:g} is at the edge of {key}; the best may lie beyond it (extend {key}=[...])")
    result = {"fold": int(cfg.fold), "volume": group.name, "min_component_size": min_size, "rows": rows,
              "best": {m: r for m, r in best.items() if r is not None}}
    (run_dir / "calibration.json").write_text(json.dumps(result, indent=1))
    return result


@hydra_main("calibrate")
def main(cfg: DictConfig) -> None:
    calibrate(cfg)


if __name__ == "__main__":
    main()
