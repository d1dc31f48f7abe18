"""Time the recipe's 3-D training step (DynUNet of ``configs/model/dynunet.yaml``, Boundary DoU 3-D,
SGD) on random crops: ``python -m benchmarks.step3d [--size 96] [--batch 1] [--steps 3]``.

Prints seconds per step and crops per second; used by ``benchmarks.volumes`` (is the data side faster
than the model?) and ``benchmarks.gpu_check`` (``recipe3d``: batch 4 at 192^3, 16-mixed on CUDA).
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from src.utils.settings import REPO_ROOT


def recipe_net() -> torch.nn.Module:
    from monai.networks.nets import DynUNet

    spec = yaml.safe_load((REPO_ROOT / "configs" / "model" / "dynunet.yaml").read_text())
    return DynUNet(**spec["net"])


def time_step(size: int = 96, batch: int = 1, steps: int = 3, device: str = "cpu", amp: bool = False) -> dict:
    """Seconds per optimiser step (median of ``steps`` after one warm-up) and crops per second."""
    from src.models.losses import BoundaryDoULoss

    dev = torch.device(device)
    net = recipe_net().to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    loss_fn = BoundaryDoULoss()
    x = torch.rand(batch, 1, size, size, size, device=dev)
    y = (torch.rand(batch, 1, size, size, size, device=dev) > 0.97).float()
    scaler = torch.amp.GradScaler(dev.type, enabled=amp and dev.type == "cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp and dev.type == "cuda"):
            out = net(x)
        loss = loss_fn(out.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]
    result = {"size": size, "batch": batch, "step_s": t, "crops_per_s": batch / t}
    if dev.type == "cuda":
        result["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args(argv)
    r = time_step(args.size, args.batch, args.steps, args.device, args.amp)
    print(f"DynUNet step, batch {r['batch']} at {r['size']}^3 on {args.device}: {r['step_s']:.2f} s ({r['crops_per_s']:.2f} crops/s)")
    return r


if __name__ == "__main__":
    main()
