"""The level to reach: a plain 2-D network, trained and predicted outside the project's pipeline.

    python -m benchmarks.reference [--data data/phantom] [--test-data data/phantom data/phantom_B]
        [--train kidney_1_dense kidney_2] [--steps 800] [--seed 0] [--out logs/reference]

The network issue 11 measured on an independently written phantom (kidney_5 0.579, kidney_6 0.583):
a plain smp ``Unet("resnet18")`` without pretraining, one input channel, trained with AdamW on batches of
96^2 crops cut from the three axes of the train kidneys (half of them centred on a labelled vessel voxel),
flips and 90-degree turns, brightness / contrast / gamma / blur / noise (albumentations), every volume
min-max normalised between its own 1st and 99.9th percentiles; predicted on whole slices along the three
axes, the three probabilities averaged and thresholded at 0.5. Nothing of ``src.data``, ``src.models`` or
``src.inference`` is used: only the scorer (:func:`src.metrics.surface_dice.surface_dice`) and the demo's
reader of ``solution.csv``. It prints, per test dataset and kidney, the network's surface Dice at
0.5 and at its best threshold next to the best global intensity threshold, and saves the weights
(``reference.pt``) and the scores (``scores.json``) under ``--out``.

What it answers: whether a test kidney is within reach of a small network trained for CPU minutes at all,
so that a project recipe that scores below it has something to fix, and one that scores at its level is
limited by the data. About 12 CPU minutes for 800 steps on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch

from src.metrics.baseline import DEFAULT_GRID
from src.metrics.surface_dice import surface_dice
from src.pipelines.demo import solution_volume
from src.utils.settings import REPO_ROOT

CROP = 96
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def read_stack(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.tif"))
    if not files:
        raise SystemExit(f"benchmarks.reference: no .tif slices in {folder}")
    return np.stack([tifffile.imread(f) for f in files])


def normalise(volume: np.ndarray) -> np.ndarray:
    lo, hi = (float(q) for q in np.percentile(volume, (1.0, 99.9)))
    return np.clip((volume.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def train_kidney(data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(normalised image, boolean labels) of a train kidney that has its own images (not kidney_3_dense)."""
    image = normalise(read_stack(data / "train" / name / "images"))
    labels = read_stack(data / "train" / name / "labels") > 127
    if image.shape != labels.shape:
        raise SystemExit(f"benchmarks.reference: {name}: images {image.shape} and labels {labels.shape} differ")
    return image, labels


def kidney_truth(solution: pd.DataFrame, kidney: str, depth: int) -> np.ndarray:
    truth = solution_volume(solution, kidney).astype(bool) if (solution.image_id == kidney).any() else np.zeros(0)
    if len(truth) != depth:
        raise SystemExit(f"benchmarks.reference: solution.csv has {len(truth)} rows for {kidney}, images {depth}")
    return truth


def augmentation(seed: int):
    import albumentations as A

    pipeline = A.Compose([
        A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.3, p=0.7),
        A.RandomGamma(gamma_limit=(70, 150), p=0.5),
        A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.0), p=0.3),
        A.GaussNoise(std_range=(0.01, 0.08), p=0.5),
    ])
    pipeline.set_random_seed(seed)
    return pipeline


def sample(kidneys, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 96^2 crop of a random slice along a random axis of a random kidney; half centred on a vessel."""
    image, labels, vessel_points = kidneys[rng.integers(len(kidneys))]
    axis = int(rng.integers(3))
    if rng.random() < 0.5 and len(vessel_points):
        centre = vessel_points[rng.integers(len(vessel_points))]
    else:
        centre = np.array([rng.integers(n) for n in image.shape])
    img2d = np.take(image, centre[axis], axis=axis)
    lab2d = np.take(labels, centre[axis], axis=axis)
    rest = [c for a, c in enumerate(centre) if a != axis]
    pad = CROP // 2
    img2d = np.pad(img2d, pad, mode="reflect")
    lab2d = np.pad(lab2d, pad, mode="reflect")
    # in padded coordinates the crop centred on (r, c) starts at (r, c); jitter it by up to a quarter crop
    y0 = int(np.clip(rest[0] + rng.integers(-CROP // 4, CROP // 4 + 1), 0, img2d.shape[0] - CROP))
    x0 = int(np.clip(rest[1] + rng.integers(-CROP // 4, CROP // 4 + 1), 0, img2d.shape[1] - CROP))
    return img2d[y0 : y0 + CROP, x0 : x0 + CROP], lab2d[y0 : y0 + CROP, x0 : x0 + CROP]


def build_network():
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=1)


def train(kidneys, steps: int, batch: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pipeline = augmentation(seed)
    net = build_network()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    net.train()
    started = time.perf_counter()
    for step in range(steps):
        images, masks = [], []
        for _ in range(batch):
            img, lab = sample(kidneys, rng)
            out = pipeline(image=np.ascontiguousarray(img[..., None], dtype=np.float32), mask=lab.astype(np.uint8))
            images.append(out["image"][..., 0])
            masks.append(out["mask"])
        x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
        y = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
        logits = net(x)
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * y).sum() + 1) / (prob.sum() + y.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + dice
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % 50 == 0:
            print(f"  step {step + 1}/{steps}  loss {loss.item():.3f}  {time.perf_counter() - started:.0f} s", flush=True)
    return net


@torch.no_grad()
def predict(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Mean sigmoid probability of whole slices along the three axes (padded to a multiple of 32)."""
    net.eval()
    total = np.zeros(image.shape, dtype=np.float32)
    for axis in range(3):
        moved = np.moveaxis(image, axis, 0)
        h, w = moved.shape[1:]
        ph, pw = -h % 32, -w % 32
        out = np.empty(moved.shape, dtype=np.float32)
        for start in range(0, len(moved), 8):
            chunk = np.pad(moved[start : start + 8], ((0, 0), (0, ph), (0, pw)), mode="reflect")
            prob = torch.sigmoid(net(torch.from_numpy(chunk[:, None].copy())))[:, 0, :h, :w]
            out[start : start + 8] = prob.numpy()
        total += np.moveaxis(out, 0, axis)
    return total / 3


def best_intensity_threshold(image: np.ndarray, truth: np.ndarray) -> float:
    """The demo's baseline (:func:`src.metrics.baseline.threshold_baseline`'s grid) on this normalisation."""
    return max(surface_dice(image > t, truth) for t in DEFAULT_GRID)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data" / "phantom"), help="dataset to train on")
    parser.add_argument("--test-data", nargs="+", default=None, help="datasets whose test kidneys are scored "
                        "(solution.csv); default: --data")
    parser.add_argument("--train", nargs="+", default=["kidney_1_dense", "kidney_2"], help="train kidneys (with images)")
    parser.add_argument("--test", nargs="+", default=["kidney_5", "kidney_6"], help="test kidneys")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO_ROOT / "logs" / "reference"))
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    kidneys = []
    for name in args.train:
        image, labels = train_kidney(data, name)
        kidneys.append((image, labels, np.argwhere(labels)))
    weights = out / "reference.pt"
    started = time.perf_counter()
    if weights.exists():
        print(f"== reusing {weights}")
        net = build_network()
        net.load_state_dict(torch.load(weights, map_location="cpu"))
    else:
        print(f"== training a plain Unet/ResNet-18 on {', '.join(args.train)} of {data}: {args.steps} steps of {args.batch}")
        net = train(kidneys, args.steps, args.batch, args.seed)
        torch.save(net.state_dict(), weights)
    train_s = time.perf_counter() - started

    scores: dict = {"train_s": round(train_s, 1), "steps": args.steps, "seed": args.seed, "data": str(data)}
    for test_data in map(Path, args.test_data or [data]):
        solution = pd.read_csv(test_data / "solution.csv", keep_default_na=False)
        for kidney in args.test:
            image = normalise(read_stack(test_data / "test" / kidney / "images"))
            truth = kidney_truth(solution, kidney, len(image))
            prob = predict(net, image)
            at = {t: surface_dice(prob > t, truth) for t in THRESHOLDS}
            base = best_intensity_threshold(image, truth)
            row = {"at_0.5": at[0.5], "best": max(at.values()), "best_threshold": max(at, key=at.get), "baseline": base,
                   "called": float((prob > 0.5).mean()), "truth": float(truth.mean())}
            scores[f"{test_data.name}/{kidney}"] = row
            print(f"{test_data.name:>12s} {kidney}: {row['at_0.5']:.3f} at 0.5 (best {row['best']:.3f} at "
                  f"{row['best_threshold']}), global threshold {base:.3f} ({row['at_0.5'] / max(base, 1e-9):.1f}x); "
                  f"calls {100 * row['called']:.2f} % (truth {100 * row['truth']:.2f} %)", flush=True)
    (out / "scores.json").write_text(json.dumps(scores, indent=1))
    return scores


if __name__ == "__main__":
    main()
