"""Float32 against the reduced precision this machine runs natively, for the demo's two networks.

    python -m benchmarks.precision [--steps 5] [--device cpu]

Times a training step (forward, loss, backward, AdamW) and an inference forward of the demo's 2-D
network (``configs/experiment/demo.yaml``: Unet / ResNet-18, batch 16 of 96^2, 3 channels) and of its 3-D
network (``configs/model/dynunet.yaml`` with ``configs/experiment/demo3d.yaml``'s filters, batch 2 of 64^3),
once in float32 and once under the autocast dtype of :func:`src.utils.precision.autocast_dtype` (bfloat16
on a CPU with bfloat16 instructions, float16 on CUDA), and prints the two times side by side with their
ratio. On a CPU without bfloat16 there is nothing to compare and it says so.
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from src.utils.precision import autocast_dtype
from src.utils.settings import REPO_ROOT


def demo_nets() -> dict[str, tuple[torch.nn.Module, tuple[int, ...], int]]:
    """name -> (network, input shape, batch) of the demo's 2-D and 3-D models, from their configs."""
    import segmentation_models_pytorch as smp
    from monai.networks.nets import DynUNet

    configs = REPO_ROOT / "configs"
    demo = yaml.safe_load((configs / "experiment" / "demo.yaml").read_text())
    net2 = dict(yaml.safe_load((configs / "model" / "unetpp.yaml").read_text())["net"], **demo["model"]["net"])
    net2.update(in_channels=3, encoder_weights=None)
    demo3d = yaml.safe_load((configs / "experiment" / "demo3d.yaml").read_text())
    net3 = dict(yaml.safe_load((configs / "model" / "dynunet.yaml").read_text())["net"], **demo3d["model"]["net"])
    size2, batch2 = demo["data"]["img_size"], demo["data"]["batch_size"]
    size3, batch3 = demo3d["data"]["img_size"], demo3d["data"]["batch_size"]
    return {
        "2-D demo (Unet/ResNet-18)": (smp.create_model(**net2), (3, size2, size2), batch2),
        "3-D demo (DynUNet)": (DynUNet(**net3), (1, size3, size3, size3), batch3),
    }


def _median_seconds(fn, steps: int, device: torch.device) -> float:
    fn()  # warm-up (oneDNN picks its kernels on the first call)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def time_network(net: torch.nn.Module, shape: tuple[int, ...], batch: int, dtype: torch.dtype | None,
                 steps: int, device: torch.device) -> dict[str, float]:
    """Median seconds of a training step and of an inference forward under autocast ``dtype`` (None: float32)."""
    torch.manual_seed(0)
    net = net.to(device)
    x = torch.rand(batch, *shape, device=device)
    y = (torch.rand(batch, 1, *shape[1:], device=device) > 0.97).float()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def autocast():
        return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def train_step():
        net.train()
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = net(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        loss.backward()
        opt.step()

    @torch.inference_mode()
    def forward():
        net.eval()
        with autocast():
            net(x).float()

    return {"train_s": _median_seconds(train_step, steps, device), "infer_s": _median_seconds(forward, steps, device)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = autocast_dtype(device)
    if dtype is None:
        print(f"{device}: no native reduced precision here (float32 is what training and predict use)")
        return {}
    name = str(dtype).removeprefix("torch.")
    print(f"{device}, {torch.get_num_threads()} threads: float32 against {name} autocast (median of {args.steps})")
    print(f"{'network':28s} {'':10s} {'float32':>9s} {name:>9s} {'speed-up':>9s}")
    results = {}
    for label, (net, shape, batch) in demo_nets().items():
        full = time_network(net, shape, batch, None, args.steps, device)
        reduced = time_network(net, shape, batch, dtype, args.steps, device)
        results[label] = {"float32": full, name: reduced}
        for key, what in (("train_s", "train step"), ("infer_s", "inference")):
            print(f"{label:28s} {what:10s} {full[key]:8.3f}s {reduced[key]:8.3f}s {full[key] / reduced[key]:8.2f}x")
    return results


if __name__ == "__main__":
    main()
