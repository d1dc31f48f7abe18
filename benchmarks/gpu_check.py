"""One prepared check of the CUDA paths, for a machine with a GPU: ``python -m benchmarks.gpu_check OUT_DIR``.

1. surface Dice on CUDA tensors equals the CPU value (and its time);
2. stage 1 trains on the GPU with the default trainer (16-mixed, sliding-window validation on the GPU);
3. DDP on one GPU validates the trained checkpoint to the same ``val/sd@*`` as the single-device trainer;
4. the recipe's network (UNet++ / EfficientNet-B5 and B6, 3 channels, 512^2, batch 16 per GPU, 16-mixed):
   time per training step, and sliding-window inference on a real-sized 1303x912 slice;
5. inference: ``generate_pseudo.py`` (d4 TTA) and ``python -m src.predict`` with the trained demo model
   on the GPU, scored; and the engine with a B5 network over three views of a real-sized volume.
Prints a summary and writes it to OUT_DIR/gpu_check.json. ``--only NAME ...`` runs some of them
(metric, training, recipe, inference; inference needs training).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from src.data.multiview import project_split
from src.data.phantom import build_phantom
from src.metrics.surface_dice import surface_dice


def timed(fn, repeat=3):
    best, value = float("inf"), None
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, value


def check_metric(report):
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:128, :256, :256]
    a = ((z - 64) ** 2 + (y - 128) ** 2 + (x - 120) ** 2) < 60**2
    b = (((z - 62) ** 2 + (y - 130) ** 2 + (x - 121) ** 2) < 58**2) | (rng.random(a.shape) > 0.999)
    t_cpu, v_cpu = timed(lambda: surface_dice(b, a), 1)
    pa, pb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    t_gpu, v_gpu = timed(lambda: surface_dice(pb, pa))
    report["metric"] = {"cpu": v_cpu, "cuda": v_gpu, "equal": abs(v_cpu - v_gpu) < 1e-12, "cpu_s": t_cpu, "cuda_s": t_gpu}


def train_cli(*overrides):
    cmd = [sys.executable, "-m", "src.train", "experiment=demo", "extras.print_config=false", "~callbacks.rich_progress_bar",
           "trainer.enable_progress_bar=false", *overrides]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        print(out.stdout[-3000:], out.stderr[-5000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - t0


def check_training(report, data: Path, logs: Path):
    run = logs / "gpu_train"
    seconds = train_cli(f"paths.data_dir={data}", "trainer=default", "trainer.max_epochs=3", f"hydra.run.dir={run}")
    summary = json.loads((run / "metrics.json").read_text())
    config = (run / "config.yaml").read_text()
    report["train_default_trainer"] = {
        "seconds": seconds, "precision_16_mixed": "precision: 16-mixed" in config,
        "val_sd@0.5": summary["metrics"].get("val/sd@0.5"), "val_dice": summary["metrics"].get("val/dice"),
    }
    ckpt = summary["best_model_path"]
    results = {}
    for name, trainer in (("gpu", ["trainer=gpu"]), ("ddp_1gpu", ["trainer=ddp", "trainer.devices=1"])):
        folder = logs / f"validate_{name}"
        train_cli(f"paths.data_dir={data}", *trainer, "train=false", f"ckpt_path={ckpt}", f"hydra.run.dir={folder}")
        results[name] = json.loads((folder / "metrics.json").read_text())["metrics"]
    keys = [k for k in results["gpu"] if k.startswith("val/sd@")]
    report["ddp_one_gpu_validation"] = {
        "equal_sd": all(results["gpu"][k] == results["ddp_1gpu"][k] for k in keys),
        "gpu": {k: results["gpu"][k] for k in keys}, "ddp": {k: results["ddp_1gpu"][k] for k in keys},
    }


def _recipe_speed(encoder: str, loss_fn) -> dict:
    """Training-step and sliding-window times of the recipe's UNet++ with one encoder (fp16 autocast)."""
    import segmentation_models_pytorch as smp
    from monai.inferers import sliding_window_inference

    net = smp.create_model("UnetPlusPlus", encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1).cuda()
    opt = torch.optim.RAdam(net.parameters(), lr=3e-4)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.rand(16, 3, 512, 512, device="cuda")
    y = (torch.rand(16, 1, 512, 512, device="cuda") > 0.95).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    t_step, _ = timed(lambda: [step() for _ in range(10)], 1)
    net.eval()
    slice_ = torch.rand(1, 3, 1303, 912, device="cuda")

    def infer():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            return sliding_window_inference(slice_, (512, 512), 8, net, overlap=0.25, mode="gaussian", padding_mode="reflect")

    infer()
    t_inf, _ = timed(infer)
    return {
        "train_step_s_batch16": t_step / 10, "images_per_s": 160 / t_step,
        "sliding_window_1303x912_s": t_inf, "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30,
    }


def check_recipe_speed(report):
    from src.models.losses import BoundaryDoULoss

    loss_fn = BoundaryDoULoss()
    for encoder in ("tu-tf_efficientnet_b5", "tu-tf_efficientnet_b6"):
        report[f"recipe_{encoder}"] = _recipe_speed(encoder, loss_fn)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def check_recipe3d_speed(report):
    from benchmarks.step3d import time_step

    report["recipe3d_dynunet_batch4_192"] = time_step(size=192, batch=4, steps=5, device="cuda", amp=True)


def check_inference(report, data: Path, logs: Path):
    import segmentation_models_pytorch as smp

    from src.data.volumes import Volume
    from src.inference.checkpoints import Member
    from src.inference.engine import InferenceEngine
    from src.score import SOLUTION_COLUMNS, SUBMISSION_COLUMNS, read_csv, score_submission

    ckpt = json.loads((logs / "gpu_train" / "metrics.json").read_text())["best_model_path"]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "generate_pseudo.py", "--dataset_folder", str(data), "--checkpoints", ckpt,
                    "--tta", "none", "d4", "--roi", "128", "--quiet", "--overwrite"], check=True)
    t_pseudo = time.perf_counter() - t0
    t0 = time.perf_counter()
    sub = logs / "submission.csv"
    subprocess.run([sys.executable, "-m", "src.predict", f"checkpoints=[{ckpt}]", f"paths.data_dir={data}", f"output={sub}",
                    "engine.roi_size=128", "tta=d4", f"hydra.run.dir={logs / 'predict'}", "progress=false"], check=True)
    t_predict = time.perf_counter() - t0
    scores = score_submission(read_csv(sub, SUBMISSION_COLUMNS, "s"), read_csv(data / "solution.csv", SOLUTION_COLUMNS, "s"))
    shape = (100, 1303, 912)
    folder = logs / "big"
    folder.mkdir(parents=True, exist_ok=True)
    vol = np.lib.format.open_memmap(folder / "v.npy", mode="w+", dtype=np.uint16, shape=shape)
    vol[:] = np.random.default_rng(0).integers(15000, 30000, size=shape[1:], dtype=np.uint16)
    vol.flush()
    volume = Volume(folder, np.load(folder / "v.npy", mmap_mode="r"), 0, ".tif", (15000.0, 30000.0), folder / "v.npy")
    net = smp.create_model("UnetPlusPlus", encoder_name="tu-tf_efficientnet_b5", encoder_weights=None, in_channels=3, classes=1)
    engine = InferenceEngine([Member(net, 3)], roi_size=800, sw_batch_size=4, slices_per_batch=4, progress=False)
    t0 = time.perf_counter()
    engine.predict(volume, out=folder / "prob.npy")
    torch.cuda.synchronize()
    t_big = time.perf_counter() - t0
    report["inference"] = {
        "generate_pseudo_plain_plus_d4_s": t_pseudo, "predict_d4_s": t_predict, "test_scores": scores,
        "engine_b5_roi800_3views_100x1303x912_s": t_big, "voxels_per_s": float(np.prod(shape)) / t_big,
    }


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="gpu_check")
    parser.add_argument("--only", nargs="+", choices=("metric", "training", "recipe", "recipe3d", "inference"), default=None)
    args = parser.parse_args()
    only = args.only
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0)}
    data, logs = Path("/tmp/bvs_phantom"), Path("/tmp/bvs_logs")
    t0 = time.perf_counter()
    build_phantom(data, size="small")
    project_split(data, ("train",), progress=False)
    report["phantom_s"] = time.perf_counter() - t0
    for name, fn in (("metric", lambda: check_metric(report)), ("training", lambda: check_training(report, data, logs)),
                     ("recipe", lambda: check_recipe_speed(report)), ("recipe3d", lambda: check_recipe3d_speed(report)),
                     ("inference", lambda: check_inference(report, data, logs))):
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        fn()
        print(f"{name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=float))
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
