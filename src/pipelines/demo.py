"""The end-to-end demo on the built-in phantom: ``python -m src.demo`` (what ``make demo`` runs).

Steps, each a command a user would run on the real data:
  1. ``python -m src.data.phantom --out data/phantom --size small``  (synthetic data, Kaggle layout)
  2. ``python generate_mutliview.py data/phantom``                  (xz/zy projections)
  3. ``python -m src.data.index data/phantom``                      (per-slice index CSV)
  4. ``python -m src.score SUBMISSION solution.csv``                 for a perfect and an empty submission
  5. ``python -m src.train experiment=demo paths.data_dir=data/phantom``  (stage 1, fold 0, on the CPU),
     next to the best global intensity threshold on the same validation volume
  6. ``python generate_pseudo.py`` and ``python generate_mutliview_pseudo.py``  (the external jp2 kidney)
  7. ``python -m src.train recipe=pseudo_3d experiment=demo3d``  (a small 3-D DynUNet)
  8. ``python -m src.predict`` on the test kidneys with the 2-D model, the 3-D model alone, and the
     submitted 2-D + 3-D blend, each scored against ``solution.csv``; the threshold baseline on the
     same kidneys, and a PNG per kidney (one slice per view)
Every step is idempotent: a second run reuses what the first wrote (a finished training included).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from src.data.index import build_index
from src.data.multiview import project_split
from src.data.phantom import build_phantom
from src.data.registry import Registry
from src.data.volumes import VolumeStore
from src.inference.blend import blend_score_slice
from src.inference.checkpoints import best_checkpoint_in, checkpoint_threshold, monitored_best
from src.inference.preview import write_preview
from src.metrics.baseline import best_threshold, threshold_baseline
from src.metrics.rle import rle_decode
from src.metrics.surface_dice import surface_dice
from src.pipelines.common import add_training_overrides, ensure_run, label_external, run, score_csv, trained_size
from src.score import mean_score
from src.utils.environment import versions_line
from src.utils.errors import cli_main
from src.utils.files import write_csv_atomic
from src.utils.settings import REPO_ROOT

STEPS = 8


def step(number: int, title: str) -> float:
    print(f"\n== {number}/{STEPS} {title}")
    return time.perf_counter()


def score_file(submission: Path, solution: Path) -> dict[str, float]:
    scores = score_csv(submission, solution)
    for kidney, value in scores.items():
        print(f"  {kidney:<10} {value:.6f}")
    scores["mean"] = mean_score(scores)
    print(f"  score      {scores['mean']:.6f}")
    return scores


@cli_main
def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO_ROOT / "data" / "phantom"), help="phantom dataset folder")
    parser.add_argument("--size", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", default="A", help="phantom style trained on (src.data.phantom.STYLES)")
    parser.add_argument("--test-style", default="B",
                        help="also predict the test kidneys of a phantom of this style (built beside --out); 'none': skip")
    parser.add_argument("--work-dir", default=str(REPO_ROOT / "logs" / "demo"), help="runs, submissions and pictures")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--skip-train", action="store_true", help="stop after the scorer check")
    parser.add_argument("--fold", type=int, default=0, help="stage-1 fold to train")
    add_training_overrides(parser, "the stage-1 run")
    args = parser.parse_args(argv)
    data, work = Path(args.out), Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    t = step(1, f"phantom dataset ({args.size}, seed {args.seed}, style {args.style}) -> {data}")
    summary = build_phantom(data, seed=args.seed, size=args.size, style=args.style)
    for name, entry in summary["kidneys"].items():
        print(f"  {name:<48} {'x'.join(map(str, entry['shape']))}  {entry['voxel_um']} um")
    print(f"  {'reused' if summary['existed'] else 'built'} in {time.perf_counter() - t:.1f} s")

    t = step(2, "multiview projections (generate_mutliview.py)")
    project_split(data, ("train",), store=VolumeStore(progress=not args.quiet), progress=not args.quiet)
    print(f"  done in {time.perf_counter() - t:.1f} s")

    t = step(3, "slice index (src.data.index)")
    index = build_index(data)
    write_csv_atomic(index, data / "gt_extended.csv")
    print(f"  {len(index)} slices in {index.group.nunique()} groups -> {data / 'gt_extended.csv'} ({time.perf_counter() - t:.1f} s)")

    step(4, "scorer (src.score) on the test kidneys' solution.csv")
    solution = data / "solution.csv"
    perfect = work / "submission_perfect.csv"
    pd.read_csv(solution, keep_default_na=False)[["id", "rle"]].to_csv(perfect, index=False)
    print(f"  perfect submission ({perfect}):")
    s_perfect = score_file(perfect, solution)["mean"]
    print(f"  empty submission ({data / 'sample_submission.csv'}):")
    s_empty = score_file(data / "sample_submission.csv", solution)["mean"]
    results = {"perfect": s_perfect, "empty": s_empty}
    if not args.skip_train:
        run_dir = stage1(data, work, args.fold, args.train_overrides, results)
        pseudo(data, run_dir, args.quiet)
        run_3d = stage2_3d(data, work, args.fold, args.train_3d_overrides)
        predict_test(data, work, run_dir, run_3d, results)
        if args.test_style.lower() != "none" and args.test_style != args.style:
            other = data.with_name(f"{data.name}_{args.test_style}")
            cross_style(other, args.seed, args.size, args.style, args.test_style, work, run_dir, results)
    summary_line = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s: {summary_line}")
    print(f"libraries (the figures move with them; README, Measured performance): {versions_line()}")
    return results


def best_validation(metrics_csv: Path) -> tuple[int, str, float]:
    """(epoch, metric, value) of the best ``val/sd@<th>`` over every logged epoch and threshold."""
    df = pd.read_csv(metrics_csv)
    columns = [c for c in df.columns if c.startswith("val/sd@")]
    rows = df.dropna(subset=columns, how="all")
    values = rows[columns]
    column = values.max().idxmax()
    row = values[column].idxmax()
    return int(rows.loc[row, "epoch"]), column, float(values.loc[row, column])


def validation_of(metrics_csv: Path, checkpoint: Path, metric: str = "val/sd@0.5") -> float:
    """``metric`` logged at the epoch ``checkpoint`` was saved (``epoch_NNN_...``; the last epoch for ``last.ckpt``)."""
    df = pd.read_csv(metrics_csv).dropna(subset=[metric])
    match = re.match(r"epoch_(\d+)", checkpoint.name)
    rows = df[df.epoch == int(match.group(1))] if match else df.tail(1)
    return float(rows[metric].iloc[-1]) if len(rows) else float("nan")


def stage1(data: Path, work: Path, fold: int, overrides: list[str], results: dict) -> Path:
    """Train the demo model (reusing a finished run) and compare it with the threshold baseline."""
    run_dir = work / "stage1" / f"fold{fold}"
    t = step(5, f"stage 1: python -m src.train experiment=demo data.fold={fold} (CPU) -> {run_dir}")
    ensure_run(run_dir, ["experiment=demo", f"data.fold={fold}", f"paths.data_dir={data}", *overrides], t)
    epoch, metric, value = best_validation(run_dir / "metrics.csv")
    checkpoint = best_checkpoint_in(run_dir / "checkpoints")
    at_05 = validation_of(run_dir / "metrics.csv", checkpoint)
    registry = Registry.load()
    val = registry.fold("2d", fold).val
    image, label = VolumeStore(progress=False).open_pair(val.images_dir(data), val.labels_dir(data), val.images_follow_labels,
                                                         val.label_kind)
    threshold, baseline = best_threshold(threshold_baseline(image, label.data, registry.label_threshold))
    print(f"  validation volume {val.name} ({len(image)} slices):")
    print(f"  model     best {metric} = {value:.4f} (epoch {epoch}, the best of every epoch and threshold)")
    ranked = monitored_best(checkpoint.parent, list(checkpoint.parent.glob("*.ckpt")))
    by = f"best {ranked.monitor}" if ranked is not None and ranked.path == checkpoint else "best val/dice in its name"
    print(f"            the checkpoint predict uses ({checkpoint.name}, {by}): val/sd@0.5 = {at_05:.4f}")
    threshold_used, source = checkpoint_threshold(checkpoint)
    print(f"            predict thresholds it at {threshold_used:g} (threshold=checkpoint; {source})")
    print(f"  baseline  best global intensity threshold {threshold:.2f} on the normalised image: surface dice {baseline:.4f}")
    print(f"  the model {'beats' if value > baseline else 'does NOT beat'} the threshold baseline")
    results.update({"val_model_sd": value, "val_checkpoint_sd": at_05, "val_baseline_sd": baseline, "predict_threshold": threshold_used})
    return run_dir


def pseudo(data: Path, run_dir: Path, quiet: bool) -> None:
    """Pseudo labels of the external kidney from this run's stage-1 model, and their projections
    (:func:`src.pipelines.common.label_external`: labels another model left in the phantom are rewritten)."""
    t = step(6, "pseudo labels of the external kidney (generate_pseudo.py) and their projections")
    label_external(data, best_checkpoint_in(run_dir / "checkpoints"), trained_size(run_dir), quiet)
    print(f"  done in {time.perf_counter() - t:.0f} s")


def stage2_3d(data: Path, work: Path, fold: int, overrides: list[str]) -> Path:
    """Train the small 3-D model (reusing a finished run)."""
    run_dir = work / "stage2_3d" / f"fold{fold}"
    t = step(7, f"stage 2, 3-D: python -m src.train recipe=pseudo_3d experiment=demo3d -> {run_dir}")
    ensure_run(run_dir, ["recipe=pseudo_3d", "experiment=demo3d", f"data.fold={fold}", f"paths.data_dir={data}",
                         *overrides], t)
    epoch, metric, value = best_validation(run_dir / "metrics.csv")
    print(f"  best {metric} of the validation crops = {value:.4f} (epoch {epoch})")
    print("  (a deliberately tiny 3-D model trained for about three and a half minutes on the CPU: the blend, which")
    print("   trusts the 3-D model inside the 2-D model's hull, needs a well-trained one to help)")
    return run_dir


def test_baselines(data: Path) -> dict[str, float]:
    """Best global intensity threshold per test kidney of ``data`` (tuned on the kidney itself)."""
    solution = pd.read_csv(data / "solution.csv", keep_default_na=False)
    store, out = VolumeStore(progress=False), {}
    for kidney in sorted(solution.image_id.unique()):
        image = store.open(data / "test" / kidney / "images")
        out[kidney] = best_threshold(threshold_baseline(image, solution_volume(solution, kidney)))[1]
    return out


def cross_style(data: Path, seed: int, size: str, style: str, test_style: str, work: Path, run_dir: Path, results: dict) -> None:
    """The stage-1 model (trained on ``style``) on the test kidneys of a phantom of ``test_style``."""
    t = time.perf_counter()
    print(f"\n== cross-style: the model trained on style {style}, on the test kidneys of style {test_style} ({data})")
    build_phantom(data, seed=seed, size=size, style=test_style)
    submission, predict_dir = work / f"submission_style_{test_style}.csv", work / f"predict_style_{test_style}"
    shutil.rmtree(predict_dir, ignore_errors=True)
    run([sys.executable, "-m", "src.predict", f"checkpoints=[{best_checkpoint_in(run_dir / 'checkpoints')}]",
         f"paths.data_dir={data}", "progress=false", f"output={submission}", f"hydra.run.dir={predict_dir}"])
    scores = score_file(submission, data / "solution.csv")
    for kidney, baseline in test_baselines(data).items():
        ratio = scores[kidney] / baseline if baseline > 0 else float("inf")
        print(f"  {kidney:<10} model {scores[kidney]:.4f}  threshold baseline {baseline:.4f}  ({ratio:.1f}x)")
        results.update({f"{test_style}_{kidney}_model": scores[kidney], f"{test_style}_{kidney}_baseline": baseline})
    results[f"{test_style}_test_model_mean"] = scores["mean"]
    print(f"  done in {time.perf_counter() - t:.0f} s")


def solution_volume(solution: pd.DataFrame, kidney: str) -> np.ndarray:
    rows = solution[solution.image_id == kidney].sort_values("slice_id")
    return np.stack([rle_decode(r.rle, (int(r.height), int(r.width))) for r in rows.itertuples()])


AVERAGE_BLEND = {"mode": "average", "weight_2d": 3.0, "weight_3d": 1.0, "threshold": 0.5}  # also reported: (3 p2d + p3d) / 4 > 0.5


def predict_test(data: Path, work: Path, run_dir: Path, run_3d: Path, results: dict) -> None:
    t = step(8, "predict the test kidneys (python -m src.predict): 2-D, 3-D alone, 2-D + 3-D blend")
    checkpoint = best_checkpoint_in(run_dir / "checkpoints")
    checkpoint_3d = best_checkpoint_in(run_3d / "checkpoints")
    submission, predict_dir = work / "submission.csv", work / "predict"
    blended, blend_dir = work / "submission_blend.csv", work / "predict_blend"
    common = [f"checkpoints=[{checkpoint}]", f"paths.data_dir={data}", "progress=false"]
    shutil.rmtree(predict_dir, ignore_errors=True)
    shutil.rmtree(blend_dir, ignore_errors=True)
    run([sys.executable, "-m", "src.predict", *common, f"output={submission}", "keep_probabilities=true", f"hydra.run.dir={predict_dir}"])
    run([sys.executable, "-m", "src.predict", *common, f"output={blended}", f"checkpoints_3d=[{checkpoint_3d}]",
         f"engine_3d.roi_size={trained_size(run_3d)}", "keep_probabilities=true", f"hydra.run.dir={blend_dir}"])
    print(f"  predicted in {time.perf_counter() - t:.0f} s")
    print(f"  2-D ({submission}):")
    scores = score_file(submission, data / "solution.csv")
    print(f"  2-D + 3-D blend ({blended}):")
    blend_scores = score_file(blended, data / "solution.csv")
    solution = pd.read_csv(data / "solution.csv", keep_default_na=False)
    store = VolumeStore(progress=False)
    print("  threshold baseline (best global intensity threshold per kidney, tuned on the kidney itself):")
    for kidney in (k for k in scores if k != "mean"):
        image = store.open(data / "test" / kidney / "images")
        truth = solution_volume(solution, kidney)
        threshold, baseline = best_threshold(threshold_baseline(image, truth))
        print(f"  {kidney:<10} {baseline:.6f} (threshold {threshold:.2f})")
        prob = np.load(predict_dir / "probabilities" / f"{kidney}.npy", mmap_mode="r")
        prob_3d = np.load(blend_dir / "probabilities" / f"{kidney}_3d.npy", mmap_mode="r")
        p2d, p3d = np.asarray(prob, dtype=np.float32), np.asarray(prob_3d, dtype=np.float32)
        only_3d = surface_dice(p3d > 0.5, truth)
        print(f"  {'':<10} 3-D alone (threshold 0.5): {only_3d:.6f}")
        average = surface_dice(blend_score_slice(p2d, p3d, **AVERAGE_BLEND) > AVERAGE_BLEND["threshold"], truth)
        overrides = " ".join(f"blend.{k}={v}" for k, v in AVERAGE_BLEND.items())
        print(f"  {'':<10} 2-D + 3-D average ({overrides}): {average:.6f}")
        # the submitted blend calls a voxel where p2d + p3d > 0.55 inside the 2-D hull: a 3-D model that
        # calls more than the truth pulls it down; these shares show whether it does
        print(f"  {'':<10} share of voxels called at 0.5: 2-D {(p2d > 0.5).mean():.2%}, 3-D {(p3d > 0.5).mean():.2%}, "
              f"truth {truth.mean():.2%}")
        png = write_preview(image, p2d > 0.5, work / "pictures" / f"{kidney}.png", truth)
        print(f"  picture: {png}")
        results.update({f"{kidney}_model": scores[kidney], f"{kidney}_baseline": baseline, f"{kidney}_3d": only_3d,
                        f"{kidney}_blend": blend_scores[kidney], f"{kidney}_average": average})
    results["test_model_mean"] = scores["mean"]
    results["test_blend_mean"] = blend_scores["mean"]


if __name__ == "__main__":
    main()
