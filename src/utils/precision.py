"""Which reduced precision a device runs natively: one answer for training and for inference.

* CUDA: float16 autocast (Lightning ``16-mixed``), as the recipe trains and predicts;
* a CPU with bfloat16 instructions (x86 AVX512-BF16 or AMX, Arm BF16): bfloat16 autocast (``bf16-mixed``).
  On the 2-core AMD EPYC (AVX512-BF16) of the project's CI, ``python -m benchmarks.precision``: a training
  step of the demo's 2-D Unet/ResNet-18 (batch 16 of 96^2) 0.33 s against 0.56 s in float32 (1.7x), of its
  3-D DynUNet (batch 2 of 64^3) 0.40 s against 0.70 s (1.8x); inference forwards 1.7x and 1.9x;
* any other CPU (bfloat16 only emulated, slower than float32) and MPS: float32.

Training (``${auto_precision:}``, ``${cpu_precision:}`` in the trainer configs) and the inference engines
(:func:`autocast_dtype`) ask the same question, so a model is validated during training in the precision
``predict`` and ``calibrate`` run it in on that machine (the predict == validation invariant).
``trainer.precision=32-true`` and ``engine.amp=false`` switch it off.
"""

from __future__ import annotations

import platform
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86 AVX512-BF16 / AMX, Arm BF16); probed once per process
    (the engines ask for every batch)."""
    try:
        if platform.machine().lower() in ("aarch64", "arm64"):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch build without these probes: assume not
        return False


def cpu_precision() -> str:
    """Lightning precision for CPU training: ``bf16-mixed`` where the CPU has bfloat16, else ``32-true``."""
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def auto_precision() -> str:
    """Lightning precision for ``accelerator: auto``: ``16-mixed`` with CUDA, else :func:`cpu_precision`."""
    return "16-mixed" if torch.cuda.is_available() else cpu_precision()


def autocast_dtype(device: torch.device | str, amp: bool = True) -> torch.dtype | None:
    """The autocast dtype of inference on ``device`` (None: float32): float16 on CUDA, bfloat16 on a CPU
    with native bfloat16, None elsewhere or when ``amp`` is off."""
    kind = torch.device(device).type
    if not amp:
        return None
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None
