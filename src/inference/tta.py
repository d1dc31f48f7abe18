"""Test-time augmentation for 2-D slices and 3-D volumes: each view is a number of quarter turns in the
last two axes followed by flips of some axes; it is undone on the output and the outputs are averaged.

Modes (``TTA_VIEWS[ndim][mode]``):

* 2-D (``N, C, H, W``): ``none``; ``flip`` (identity, vertical, horizontal); ``d4`` (the 8 rotations and
  reflections).
* 3-D (``N, C, D, H, W``): ``none``; ``flip`` (identity and a flip of each axis, 4 views); ``d4`` (the four
  quarter turns in the slice plane, each also flipped along z, 8 views).

With ``batched=True`` views of the same shape go through ``predict`` together, concatenated along the
batch, so a sliding window fills its batches with windows of every view at once (2-D); ``batched=False``
predicts one view at a time (3-D slabs, where a batch of 8 views would not fit in memory).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from src.utils.options import look_up

View = tuple[int, tuple[int, ...]]  # (quarter turns in the last two axes, flipped axes counted from the end)

TTA_VIEWS: dict[int, dict[str, list[View]]] = {
    2: {
        "none": [(0, ())],
        "flip": [(0, ()), (0, (-2,)), (0, (-1,))],
        "d4": [(k, flips) for k in range(4) for flips in ((), (-1,))],
    },
    3: {
        "none": [(0, ())],
        "flip": [(0, ()), (0, (-3,)), (0, (-2,)), (0, (-1,))],
        "d4": [(k, flips) for k in range(4) for flips in ((), (-3,))],
    },
}
TTA_MODES = tuple(TTA_VIEWS[2])


def tta_views(mode: str, ndim: int = 2, what: str = "tta") -> list[View]:
    """The views of ``mode`` for ``ndim`` spatial dimensions (a clear error naming ``what`` otherwise)."""
    return look_up(mode, TTA_VIEWS[ndim], what)


def apply_view(x: torch.Tensor, view: View) -> torch.Tensor:
    k, flips = view
    if k:
        x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, flips) if flips else x


def undo_view(y: torch.Tensor, view: View) -> torch.Tensor:
    k, flips = view
    if flips:
        y = torch.flip(y, flips)
    return torch.rot90(y, -k, dims=(-2, -1)) if k else y


def with_tta(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str, ndim: int = 2,
             batched: bool = True) -> torch.Tensor:
    """Mean of ``predict`` over the views of ``mode``, each mapped back to ``x``'s orientation."""
    views = tta_views(mode, ndim)
    if batched:  # views of one shape (all of them for a square image) in one call
        groups: dict[tuple[int, ...], list[View]] = {}
        for v in views:
            groups.setdefault(tuple(apply_view(x[:0], v).shape), []).append(v)
    else:
        groups = {i: [v] for i, v in enumerate(views)}
    total = None
    for group in groups.values():
        ys = predict(torch.cat([apply_view(x, v) for v in group]) if len(group) > 1 else apply_view(x, group[0]))
        for v, y in zip(group, ys.split(x.shape[0])):
            y = undo_view(y, v)
            total = y if total is None else total + y
    return total / len(views)
