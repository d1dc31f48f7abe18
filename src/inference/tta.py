"""Test-time augmentation for 2-D slices: ``none``, ``flip`` (identity, vertical, horizontal) or ``d4``
(the 8 rotations and reflections). Each view is undone on the output and the logits are averaged.
Views of the same shape go through ``predict`` together, concatenated along the batch, so a sliding
window fills its batches with windows of every flip at once."""

from __future__ import annotations

from collections.abc import Callable

import torch

from src.utils.errors import UserError

TTA_MODES = ("none", "flip", "d4")


def tta_views(mode: str) -> list[tuple[int, bool, bool]]:
    """(quarter turns, flip rows, flip columns) of each view."""
    if mode == "none":
        return [(0, False, False)]
    if mode == "flip":
        return [(0, False, False), (0, True, False), (0, False, True)]
    if mode == "d4":
        return [(k, False, flip) for k in range(4) for flip in (False, True)]
    raise UserError(f"unknown test-time augmentation {mode!r} (choose one of {', '.join(TTA_MODES)})")


def _apply(x: torch.Tensor, k: int, rows: bool, cols: bool) -> torch.Tensor:
    if k:
        x = torch.rot90(x, k, dims=(-2, -1))
    if rows:
        x = torch.flip(x, dims=(-2,))
    if cols:
        x = torch.flip(x, dims=(-1,))
    return x


def _undo(y: torch.Tensor, k: int, rows: bool, cols: bool) -> torch.Tensor:
    if cols:
        y = torch.flip(y, dims=(-1,))
    if rows:
        y = torch.flip(y, dims=(-2,))
    if k:
        y = torch.rot90(y, -k, dims=(-2, -1))
    return y


def with_tta(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str) -> torch.Tensor:
    """Mean of ``predict`` over the views of ``mode``, each mapped back to ``x``'s orientation; views of
    one shape (all of them for a square image) are predicted in one call."""
    views = tta_views(mode)
    groups: dict[tuple[int, ...], list[tuple[int, bool, bool]]] = {}
    for v in views:
        groups.setdefault(tuple(_apply(x[:0], *v).shape), []).append(v)
    total = None
    for group in groups.values():
        ys = predict(torch.cat([_apply(x, *v) for v in group]) if len(group) > 1 else _apply(x, *group[0]))
        for v, y in zip(group, ys.split(x.shape[0])):
            y = _undo(y, *v)
            total = y if total is None else total + y
    return total / len(views)
