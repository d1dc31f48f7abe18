"""Robustness levers on the phantom: ``python -m src.robustness`` (what ``make eval-robustness`` runs).

The private leaderboard was decided by kidney_6, scanned at 63.08 um against the 50 um of training.
The phantom renders the same organ geometry at both voxel sizes (its kidney_5 at 50.28 um, kidney_6 at
63.08 um), so each lever can be measured on both. This script

  1. builds the phantom and its projections (as ``make demo``; reused when present);
  2. trains, on the CPU at the demo's size (``experiment=demo``), the recipe's 2-D model, the same
     with ``data.scale_aug_center=0.8`` and with ``data.rotate3d_prob=0.5``, pseudo-labels the external
     kidney with the seed's recipe model (as ``make demo`` does with its own; what another model wrote there
     is rewritten), and trains the demo's 3-D model on the fold with it (finished runs are reused);
  3. calibrates the recipe model's threshold and top fraction on fold 0's validation volume
     (``python -m src.calibrate``), never on the test kidneys;
  4. predicts kidney_5 and kidney_6 with the recipe as submitted (2-D + 3-D blend) and with each lever
     switched on (rows that differ only in how they decide, threshold or post-processing, decide from the
     probabilities the first such row kept: ``predict probabilities_from=``), scores each against
     ``solution.csv``, and prints a Markdown table (also written to
     ``<work-dir>/robustness.md`` and ``robustness.json``). Each finished seed's rows are kept in
     ``<work-dir>/seed<N>/rows.json``, so an interrupted run resumes after its last finished seed.

``--lever NAME OVERRIDE [OVERRIDE ...]`` (repeatable) adds a 2-D training lever of your own, trained with
every seed beside the built-in ones and scored at threshold 0.5 against 2-D alone: e.g. ``--lever pseudo
data.train_pseudo=true`` after labelling kidney_2 with a fold-1 model (README, Robustness levers). A seed
finished before the lever was asked for keeps its rows and gains the lever's.

A lever that does not help on the phantom shows as such: the table is printed as measured.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from src.pipelines.common import add_training_overrides
from src.utils.environment import library_versions, versions_line
from src.utils.errors import UserError, cli_main
from src.utils.files import write_text_atomic
from src.utils.settings import REPO_ROOT

KIDNEYS = ("kidney_5", "kidney_6")
BASE_ROW = 1  # "2-D alone, threshold 0.5": what every lever is compared with
LEVER_RUNS = {
    "recipe": [],
    "scale_aug": ["data.scale_aug_center=0.8"],
    "rotate3d": ["data.rotate3d_prob=0.5"],
}
DYNUNET_RUN = "dynunet"  # the 3-D run's folder beside the 2-D ones
PROBABILITY_OVERRIDES = ("checkpoints_3d=", "resolution.")  # predict settings that change the probabilities themselves


def compose_cfg(config: str, overrides: list[str], run_dir: Path):
    from src.utils.entry import compose_config

    return compose_config(config, overrides, run_dir)


LEVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def lever_runs(specs: list[list[str]] | None) -> dict[str, list[str]]:
    """``--lever NAME OVERRIDE ...`` arguments -> {NAME: overrides}; a one-line error for a bad or repeated one."""
    levers: dict[str, list[str]] = {}
    for spec in specs or []:
        name, overrides = spec[0], spec[1:]
        if not LEVER_NAME.fullmatch(name):
            raise UserError(f"--lever {name!r}: a lever's name is a folder name (letters, digits, '_', '.', '-'), "
                            f"then its Hydra overrides, e.g. --lever pseudo data.train_pseudo=true")
        if name in LEVER_RUNS or name == DYNUNET_RUN or name in levers:
            taken = ", ".join([*LEVER_RUNS, DYNUNET_RUN, *levers])
            raise UserError(f"--lever {name}: the name is taken (built-in and earlier levers: {taken}); choose another")
        bad = [o for o in overrides if "=" not in o]
        if not overrides or bad:
            raise UserError(f"--lever {name}: needs one or more Hydra overrides KEY=VALUE after its name"
                            + (f", got {' '.join(bad)}" if bad else ""))
        levers[name] = overrides
    return levers


def lever_label(overrides: list[str]) -> str:
    return f"2-D trained with `{' '.join(overrides)}`"


def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (distinct non-negative ints)."""
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct non-negative integers, got {text!r}")
    return seeds


def spread_verdict(diffs: list[float]) -> str:
    """``better`` / ``worse`` when the mean paired difference (lever minus 2-D alone, one per seed) exceeds
    its spread over the seeds (one standard deviation), else ``within spread``; one seed cannot tell."""
    if len(diffs) < 2:
        return "one seed: no verdict"
    mean, std = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    if abs(mean) <= std:
        return "within spread"
    return "better" if mean > 0 else "worse"


def summarise(rows_by_seed: dict[int, list[dict]]) -> list[dict]:
    """Per lever: mean and std over seeds per kidney, the paired difference to 2-D alone and a verdict.

    Levers are matched by name, in the order first seen; a lever some seeds lack (rows saved by an
    earlier version that had no such row) is summarised over the seeds that have it, named in ``seeds``."""
    seeds = sorted(rows_by_seed)
    base_name = rows_by_seed[seeds[0]][BASE_ROW]["lever"]
    by_name = {s: {r["lever"]: r for r in rows_by_seed[s]} for s in seeds}
    names = list(dict.fromkeys(r["lever"] for s in seeds for r in rows_by_seed[s]))
    out = []
    for name in names:
        have = [s for s in seeds if name in by_name[s] and base_name in by_name[s]]
        per = [by_name[s][name] for s in have]
        entry = {"lever": name, "seeds": have}
        for k in KIDNEYS:
            values = [r[k] for r in per]
            entry[k] = float(np.mean(values))
            entry[f"{k}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            entry[f"{k}_values"] = values
        means = [r["mean"] for r in per]
        diffs = [m - by_name[s][base_name]["mean"] for m, s in zip(means, have)]
        entry.update({"mean": float(np.mean(means)), "mean_std": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
                      "diff": float(np.mean(diffs)), "diff_std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0,
                      "verdict": "reference" if name == base_name else spread_verdict(diffs)})
        out.append(entry)
    return out


def markdown(summary: list[dict]) -> str:
    n = max(len(r["seeds"]) for r in summary)
    lines = [f"| lever (mean ± std over {n} seeds) | kidney_5 (50.28 um) | kidney_6 (63.08 um) | mean | vs 2-D alone (paired) | verdict |",
             "|---|---|---|---|---|---|"]
    for r in summary:
        fewer = f" (seeds {', '.join(map(str, r['seeds']))} only)" if len(r["seeds"]) < n else ""
        lines.append(f"| {r['lever']}{fewer} | {r['kidney_5']:.4f} ± {r['kidney_5_std']:.4f} "
                     f"| {r['kidney_6']:.4f} ± {r['kidney_6_std']:.4f} "
                     f"| {r['mean']:.4f} ± {r['mean_std']:.4f} | {r['diff']:+.4f} ± {r['diff_std']:.4f} | {r['verdict']} |")
    return "\n".join(lines)


def plot(summary: list[dict], path: Path) -> Path:
    """Scores per lever and kidney, bars at the mean over seeds with one-std error bars, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.45 * len(summary) + 1.5))
    y = np.arange(len(summary))
    height = 0.38
    for j, (k, colour) in enumerate(zip(KIDNEYS, ("tab:blue", "tab:orange"))):
        pos = y + (j - 0.5) * height
        # one std each side, the lower bar cut at 0 (a score is never negative; a collapsed seed makes std exceed the mean)
        xerr = [[min(r[f"{k}_std"], r[k]) for r in summary], [r[f"{k}_std"] for r in summary]]
        ax.barh(pos, [r[k] for r in summary], height, xerr=xerr, color=colour, alpha=0.7,
                capsize=3, label=k)
        for p, r in zip(pos, summary):
            ax.plot(r[f"{k}_values"], [p] * len(r[f"{k}_values"]), "k.", markersize=3)
    ax.set_yticks(y, [f"{r['lever']} [{r['verdict']}]" for r in summary], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"surface Dice (tolerance 0), mean ± std over {len(summary[0]['seeds'])} seeds")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@cli_main
def main(argv=None) -> list[dict]:
    from src.data.multiview import project_split
    from src.data.phantom import build_phantom
    from src.data.volumes import VolumeStore

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data" / "phantom"), help="phantom dataset folder (built when absent)")
    parser.add_argument("--size", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--style", default="A", help="phantom style (src.data.phantom.STYLES)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2],
                        help="comma-separated training seeds of every run, e.g. 0,1,2 (>= 3 for verdicts you can trust)")
    parser.add_argument("--work-dir", default=str(REPO_ROOT / "logs" / "robustness"))
    parser.add_argument("--min-component-size", type=int, default=50, help="voxels, for the component-removal row")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--lever", nargs="+", action="append", metavar=("NAME", "OVERRIDE"),
                        help="a 2-D training lever of your own: a name, then its Hydra overrides (repeatable), "
                             "e.g. --lever pseudo data.train_pseudo=true")
    add_training_overrides(parser, "every 2-D training run")
    args = parser.parse_args(argv)
    args.levers = lever_runs(args.lever)
    data, work = Path(args.data), Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print(f"== phantom ({args.size}, style {args.style}) -> {data}")
    build_phantom(data, size=args.size, style=args.style)
    project_split(data, ("train",), store=VolumeStore(progress=not args.quiet), progress=not args.quiet)

    rows_by_seed, calibrations = {}, {}
    for seed in args.seeds:
        rows_by_seed[seed], calibrations[seed] = finished_seed(seed, work / f"seed{seed}", args)
    summary = summarise(rows_by_seed)
    table = markdown(summary)
    print("\n" + table)
    (work / "robustness.md").write_text(table + "\n")
    png = plot(summary, work / "robustness.png")
    (work / "robustness.json").write_text(json.dumps({"seeds": args.seeds, "calibration": calibrations, "summary": summary,
                                                      "rows": rows_by_seed}, indent=1))
    print(f"\nrobustness finished in {time.perf_counter() - started:.0f} s -> {work / 'robustness.md'}, {png}")
    print(f"libraries: {versions_line()}")
    return summary


SEED_ROWS = "rows.json"  # a finished seed's rows and calibration: an interrupted multi-seed run resumes after it


def finished_seed(seed: int, work: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    """The rows of ``seed``: read from ``<work>/rows.json`` when a previous run finished it, else measured and saved."""
    saved = work / SEED_ROWS
    if saved.exists():
        entry = json.loads(saved.read_text())
        print(f"== seed {seed}: reused the finished rows in {saved}")
        changed = changed_libraries(entry.get("libraries"))
        if changed:
            print(f"   (measured with other libraries than this install's: {changed}; the figures move with them)")
        have = {r["lever"] for r in entry["rows"]}
        missing = {name: o for name, o in getattr(args, "levers", {}).items() if lever_label(o) not in have}
        if not missing:
            return entry["rows"], entry["calibration"]
        entry["rows"] += lever_rows(seed, Path(args.data), work, args, missing)
        write_text_atomic(saved, json.dumps(entry, indent=1))
        return entry["rows"], entry["calibration"]
    rows, calibration = one_seed(seed, Path(args.data), work, args)
    write_text_atomic(saved, json.dumps({"seed": seed, "rows": rows, "calibration": calibration,
                                         "libraries": library_versions()}, indent=1))
    return rows, calibration


def changed_libraries(saved: dict[str, str] | None) -> str:
    """``timm 1.0.20 -> 1.0.31, ...`` for the libraries whose version differs from a seed's saved ones
    (``unknown`` where the seed was saved before versions were recorded); empty when they agree."""
    now = library_versions()
    if saved is None:
        return "unknown (saved before versions were recorded)"
    return ", ".join(f"{name} {saved.get(name, 'absent')} -> {version}" for name, version in now.items()
                     if saved.get(name, "absent") != version)


def one_seed(seed: int, data: Path, work: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Train every lever's model with ``seed``, calibrate, predict and score every row: (rows, calibration)."""
    from src.calibrate import calibrate
    from src.inference.checkpoints import best_checkpoint_in
    from src.pipelines.common import ensure_run, label_external, trained_size

    runs = {name: train_2d(name, overrides, seed, data, work, args) for name, overrides in LEVER_RUNS.items()}
    print(f"== seed {seed}: pseudo labels of the external kidney from the recipe model (generate_pseudo.py), for the 3-D model")
    label_external(data, runs["recipe"], trained_size(work / "train" / "recipe"), args.quiet)
    run_3d = work / "train" / DYNUNET_RUN
    print(f"== seed {seed}, 3-D model: python -m src.train recipe=pseudo_3d experiment=demo3d -> {run_3d}")
    ensure_run(run_3d, ["recipe=pseudo_3d", "experiment=demo3d", f"seed={seed}", f"paths.data_dir={data}",
                        *args.train_3d_overrides], time.perf_counter())
    ckpt_3d = best_checkpoint_in(run_3d / "checkpoints")
    common = [f"paths.data_dir={data}", f"engine_3d.roi_size={trained_size(run_3d)}", f"progress={not args.quiet}"]

    print(f"== seed {seed}: calibration on fold 0's validation volume (python -m src.calibrate)")
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
        ("2-D, threshold calibrated on validation", runs["recipe"], [f"threshold={t_fixed}"]),
        ("2-D, top fraction calibrated on validation", runs["recipe"],
         ["postprocess.threshold_mode=top_fraction", f"postprocess.top_fraction={f_top}"]),
        ("2-D trained with `data.scale_aug_center=0.8`", runs["scale_aug"], []),
        ("2-D trained with `data.rotate3d_prob=0.5`", runs["rotate3d"], []),
        ("blend + rescale", runs["recipe"], [f"checkpoints_3d=[{ckpt_3d}]", rescale]),
        ("2-D + rescale, calibrated threshold", runs["recipe"], [rescale, f"threshold={t_fixed}"]),
        ("2-D, calibrated threshold + components", runs["recipe"], [f"threshold={t_fixed}", components]),
        ("2-D + rescale, calibrated threshold + components", runs["recipe"], [rescale, f"threshold={t_fixed}", components]),
        ("2-D at its checkpoint's threshold (predict's default: `validated`, 5 % margin)", runs["recipe"], ["threshold=checkpoint"]),
        ("2-D + 3-D weighted average (3 : 1), threshold 0.5", runs["recipe"],
         [f"checkpoints_3d=[{ckpt_3d}]", "blend.mode=average", "blend.weight_2d=3", "blend.weight_3d=1", "blend.threshold=0.5"]),
    ]
    kept: dict[tuple, Path] = {}
    results = [score_row(label, ckpt, overrides, f"{i:02d}", common, data, work, kept) for i, (label, ckpt, overrides) in enumerate(rows)]
    for folder in kept.values():
        shutil.rmtree(folder, ignore_errors=True)
    return results + lever_rows(seed, data, work, args, getattr(args, "levers", {})), cal["best"]


def train_2d(name: str, overrides: list[str], seed: int, data: Path, work: Path, args: argparse.Namespace) -> Path:
    """The best checkpoint of the demo 2-D model trained with ``seed`` and ``overrides`` (a finished run is reused)."""
    from src.inference.checkpoints import best_checkpoint_in
    from src.pipelines.common import ensure_run

    run_dir = work / "train" / name
    t = time.perf_counter()
    print(f"== seed {seed}, 2-D model '{name}': python -m src.train experiment=demo seed={seed} {' '.join(overrides)} -> {run_dir}")
    ensure_run(run_dir, ["experiment=demo", f"seed={seed}", f"paths.data_dir={data}", *overrides, *args.train_overrides], t)
    return best_checkpoint_in(run_dir / "checkpoints")


def lever_rows(seed: int, data: Path, work: Path, args: argparse.Namespace, levers: dict[str, list[str]]) -> list[dict]:
    """Train each ``--lever`` model with ``seed`` and score it like 2-D alone (threshold 0.5)."""
    common = [f"paths.data_dir={data}", f"progress={not args.quiet}"]
    return [score_row(lever_label(overrides), train_2d(name, overrides, seed, data, work, args), [], f"lever_{name}", common, data, work)
            for name, overrides in levers.items()]


def probability_key(ckpt: Path, overrides: list[str]) -> tuple:
    """What a row's probabilities depend on: the 2-D checkpoint and the overrides that change the probabilities
    (3-D models, resolution); rows with one key differ only in how they decide."""
    return (str(ckpt), *sorted(o for o in overrides if o.startswith(PROBABILITY_OVERRIDES)))


def score_row(label: str, ckpt: Path, overrides: list[str], key: str, common: list[str], data: Path, work: Path,
              kept: dict[tuple, Path] | None = None) -> dict:
    """Predict the test kidneys with ``ckpt`` and ``overrides`` and score them (Kaggle's scorer). With ``kept``
    (probability key -> kept folder, filled here), a row whose probabilities an earlier row kept decides from
    them (``probabilities_from``) instead of running the networks again."""
    from src.pipelines.common import score_csv
    from src.predict import predict

    out = work / "submissions" / f"{key}.csv"
    run_dir = work / "predict" / key
    t = time.perf_counter()
    # the rows measure the recipe's fixed 0.5 unless they say otherwise (the demo models' own is `validated`)
    fixed = [] if any(o.startswith("threshold=") for o in overrides) else ["threshold=0.5"]
    reuse = []
    if kept is not None:
        pkey = probability_key(ckpt, overrides)
        if pkey in kept:
            reuse = [f"probabilities_from={kept[pkey]}"]
        else:
            reuse, kept[pkey] = ["keep_probabilities=true"], run_dir / "probabilities"
    predict(compose_cfg("predict", [*common, f"checkpoints=[{ckpt}]", f"output={out}", *overrides, *fixed, *reuse], run_dir))
    scores = score_csv(out, data / "solution.csv")
    k5, k6 = scores.get("kidney_5", float("nan")), scores.get("kidney_6", float("nan"))
    print(f"  {label}: kidney_5 {k5:.4f}  kidney_6 {k6:.4f}")
    return {"lever": label, "overrides": overrides, "kidney_5": k5, "kidney_6": k6, "mean": (k5 + k6) / 2,
            "seconds": time.perf_counter() - t}


if __name__ == "__main__":
    main()
