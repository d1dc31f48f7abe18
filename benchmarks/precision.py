"""Float32 against the reduced precision this machine runs natively, for the demo's two networks.

    python -m benchmarks.precision [--steps 5] [--device cpu]

Times a training step (forward, loss, backward, AdamW) and an inference forward of the demo's 2-D
network (``experiment=demo``: Unet / ResNet-18, batch 16 of 96^2, 3 channels) and of its 3-D network
(``recipe=pseudo_3d experiment=demo3d``: DynUNet, batch 2 of 64^3), composed as ``src.train`` composes them,
once in float32 and once under the autocast dtype of :func:`src.utils.precision.autocast_dtype` (bfloat16
on a CPU with bfloat16 instructions, float16 on CUDA), and prints the two times side by side with their
ratio. On a CPU without bfloat16 there is nothing to compare and it says so.
"""

from __future__ import annotations

import argparse
import time

import torch

from src.utils.precision import autocast_dtype


def demo_nets() -> dict[str, tuple[torch.nn.Module, tuple[int, ...], int]]:
    """name -> (network, input shape, batch) of the demo's 2-D and 3-D models, as ``src.train`` composes them."""
    from omegaconf import OmegaConf

    from src.models.module_2d import build_net
    from src.models.module_3d import build_net_3d
    from src.utils.entry import compose_config

    nets = {}
    for label, overrides, build in (("2-D demo (Unet/ResNet-18)", ["experiment=demo"], build_net),
                                     ("3-D demo (DynUNet)", ["recipe=pseudo_3d", "experiment=demo3d"], build_net_3d)):
        cfg = compose_config("train", overrides)
        net = OmegaConf.to_container(cfg.model.net, resolve=True)
        size, channels = cfg.data.img_size, net["in_channels"]
        spatial = (size,) * (3 if build is build_net_3d else 2)
        nets[label] = (build(net), (channels, *spatial), cfg.data.batch_size)
    return nets


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
