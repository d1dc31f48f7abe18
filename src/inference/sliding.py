"""The one sliding-window call of the project (2-D validation, the 2-D engine, the 3-D engine): MONAI's
``sliding_window_inference`` with the importance map of each (window, mode, device) computed once and
reused, instead of once per call (a large part of the host time per slice)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference

_MAPS: dict[tuple, torch.Tensor] = {}
_LOCK = threading.Lock()


def importance_map(window: Sequence[int], mode: str, device: torch.device | str) -> torch.Tensor:
    """MONAI's importance map (``gaussian``: sigma 0.125 of the window, as its sliding window uses) for
    ``window`` on ``device``, cached."""
    key = (tuple(int(w) for w in window), mode, str(device))
    with _LOCK:
        if key not in _MAPS:
            _MAPS[key] = compute_importance_map(key[0], mode=mode, device=device)
        return _MAPS[key]


def sliding_window(x: torch.Tensor, net: Callable[[torch.Tensor], torch.Tensor], window: Sequence[int], sw_batch_size: int = 8,
                   overlap: float = 0.25, mode: str = "gaussian", padding_mode: str = "reflect",
                   sw_device: torch.device | str | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """``net`` over windows of ``window`` (one int per spatial axis) of ``x`` (N, C, *spatial), blended
    with the ``mode`` weights; windows run on ``sw_device`` (default ``x``'s) and the result is gathered
    on ``device`` (default ``x``'s)."""
    window = tuple(int(w) for w in window)
    on = torch.device(sw_device) if sw_device is not None else x.device
    return sliding_window_inference(
        x, roi_size=window, sw_batch_size=sw_batch_size, predictor=net, overlap=overlap, mode=mode,
        padding_mode=padding_mode, sw_device=sw_device, device=device, progress=False,
        roi_weight_map=importance_map(window, mode, on),
    )
