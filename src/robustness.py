"""Robustness levers on the phantom: ``python -m src.robustness`` (what ``make eval-robustness`` runs).

The private leaderboard was decided by kidney_6, scanned at 63.08 um against the 50 um of training.
The phantom renders the same organ geometry at both voxel sizes (its kidney_5 at 50.28 um, kidney_6 at
63.08 um), so each lever can be measured on both. This script

  1. builds the phantom and its projections (as ``make demo``; reused when present);
  2. trains, on the CPU at the demo's size (``experiment=demo``), the recipe's 2-D model, the same
     with ``data.scale_aug_center=0.8`` and with ``data.rotate3d_prob=0.5``, and the demo's 3-D model
     (finished runs are reused);
  3. calibrates the recipe model's threshold and top fraction on fold 0's validation volume
     (``python -m src.calibrate``), never on the test kidneys;
  4. predicts kidney_5 and kidney_6 with the recipe as submitted (2-D + 3-D blend) and with each lever
     switched on, scores each against ``solution.csv``, and prints a Markdown table (also written to
     ``<work-dir>/robustness.md`` and ``robustness.json``).

A lever that does not help on the phantom shows as such: the table is printed as measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from src.utils.errors import cli_main
from src.utils.settings import REPO_ROOT

LEVER_RUNS = {
    "recipe": [],
    "scale_aug": ["data.scale_aug_center=0.8"],
    "rotate3d": ["data.rotate3d_prob=0.5"],
}


def compose_cfg(config: str, overrides: list[str], run_dir: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from src.utils.resolvers import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config, return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    HydraConfig().set_config(cfg)
    return cfg


def score(submission: Path, data: Path) -> dict[str, float]:
    from src.score import SOLUTION_COLUMNS, SUBMISSION_COLUMNS, read_csv, score_submission

    return score_submission(read_csv(submission, SUBMISSION_COLUMNS, "submission"), read_csv(data / "solution.csv", SOLUTION_COLUMNS, "solution"))


@cli_main
def main(argv=None) -> list[dict]:
    from src.data.multiview import project_split
    from src.data.phantom import build_phantom
    from src.data.volumes import VolumeStore
    from src.calibrate import calibrate
    from src.demo import DEMO_3D, _roi, ensure_run
    from src.inference.checkpoints import best_checkpoint_in
    from src.predict import predict

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data" / "phantom"), help="phantom dataset folder (built when absent)")
    parser.add_argument("--size", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--work-dir", default=str(REPO_ROOT / "logs" / "robustness"))
    parser.add_argument("--min-component-size", type=int, default=50, help="voxels, for the component-removal row")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("train_overrides", nargs="*", help="extra Hydra overrides for every 2-D training run")
    parser.add_argument("--train-3d", dest="train_3d_overrides", nargs="*", default=[], help="extra Hydra overrides for the 3-D run")
    args = parser.parse_args(argv)
    data, work = Path(args.data), Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print(f"== phantom ({args.size}) -> {data}")
    build_phantom(data, size=args.size)
    project_split(data, ("train",), store=VolumeStore(progress=not args.quiet), progress=not args.quiet)

    runs = {}
    for name, overrides in LEVER_RUNS.items():
        run_dir = work / "train" / name
        t = time.perf_counter()
        print(f"== 2-D model '{name}': python -m src.train experiment=demo {' '.join(overrides)} -> {run_dir}")
        ensure_run(run_dir, ["experiment=demo", f"paths.data_dir={data}", *overrides, *args.train_overrides], t)
        runs[name] = best_checkpoint_in(run_dir / "checkpoints")
    run_3d = work / "train" / "dynunet"
    print(f"== 3-D model: python -m src.train --config-name=train_pseudo_3d experiment=demo3d -> {run_3d}")
    ensure_run(run_3d, ["--config-name=train_pseudo_3d", "experiment=demo3d", f"paths.data_dir={data}", *DEMO_3D,
                        *args.train_3d_overrides], time.perf_counter())
    ckpt_3d = best_checkpoint_in(run_3d / "checkpoints")
    roi, roi_3d = _roi(work / "train" / "recipe"), _roi(run_3d)
    common = [f"paths.data_dir={data}", f"engine.roi_size={roi}", f"engine_3d.roi_size={roi_3d}", f"progress={not args.quiet}"]

    print("== calibration on fold 0's validation volume (python -m src.calibrate)")
    cal = calibrate(compose_cfg("calibrate", [*common, f"checkpoints=[{runs['recipe']}]"], work / "calibrate"))
    t_fixed = cal["best"]["fixed"]["value"]
    f_top = cal["best"]["top_fraction"]["value"]

    rescale = "resolution.rescale=true"
    components = f"postprocess.min_component_size={args.min_component_size}"
    rows = [
        ("recipe as submitted: 2-D + 3-D blend", runs["recipe"], [f"checkpoints_3d=[{ckpt_3d}]"]),
        ("2-D alone, threshold 0.5", runs["recipe"], []),
        ("2-D + `resolution.rescale=true`", runs["recipe"], [rescale]),
        (f"2-D + `{components}`", runs["recipe"], [components]),
        (f"2-D, threshold {t_fixed:g} calibrated on validation", runs["recipe"], [f"threshold={t_fixed}"]),
        (f"2-D, `top_fraction={f_top:g}` calibrated on validation", runs["recipe"],
         ["postprocess.threshold_mode=top_fraction", f"postprocess.top_fraction={f_top}"]),
        ("2-D trained with `data.scale_aug_center=0.8`", runs["scale_aug"], []),
        ("2-D trained with `data.rotate3d_prob=0.5`", runs["rotate3d"], []),
        ("blend + rescale", runs["recipe"], [f"checkpoints_3d=[{ckpt_3d}]", rescale]),
        (f"2-D + rescale, threshold {t_fixed:g}", runs["recipe"], [rescale, f"threshold={t_fixed}"]),
        (f"2-D, threshold {t_fixed:g} + components", runs["recipe"], [f"threshold={t_fixed}", components]),
        (f"2-D + rescale, threshold {t_fixed:g} + components", runs["recipe"], [rescale, f"threshold={t_fixed}", components]),
    ]
    results = []
    for i, (label, ckpt, overrides) in enumerate(rows):
        out = work / "submissions" / f"{i:02d}.csv"
        t = time.perf_counter()
        predict(compose_cfg("predict", [*common, f"checkpoints=[{ckpt}]", f"output={out}", *overrides], work / "predict" / f"{i:02d}"))
        scores = score(out, data)
        k5, k6 = scores.get("kidney_5", float("nan")), scores.get("kidney_6", float("nan"))
        results.append({"lever": label, "overrides": overrides, "kidney_5": k5, "kidney_6": k6, "mean": (k5 + k6) / 2,
                        "seconds": time.perf_counter() - t})
        print(f"  {label}: kidney_5 {k5:.4f}  kidney_6 {k6:.4f}")
    base = results[1]
    lines = ["| lever | kidney_5 (50.28 um) | kidney_6 (63.08 um) | mean | vs 2-D alone |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['lever']} | {r['kidney_5']:.4f} | {r['kidney_6']:.4f} | {r['mean']:.4f} | {r['mean'] - base['mean']:+.4f} |")
    table = "\n".join(lines)
    print("\n" + table)
    (work / "robustness.md").write_text(table + "\n")
    (work / "robustness.json").write_text(json.dumps({"calibration": cal["best"], "rows": results}, indent=1))
    print(f"\nrobustness finished in {time.perf_counter() - started:.0f} s -> {work / 'robustness.md'}")
    return results


if __name__ == "__main__":
    main()
