"""Test-time augmentation for 2-D slices: ``none``, ``flip`` (identity, vertical, horizontal) or ``d4``
(the 8 rotations and reflections). Each view is undone on the output and the logits are averaged."""

from __future__ import annotations

from typing import Callable

import torch

from src.utils.errors import UserError

TTA_MODES = ("none", "flip", "d4")


def _views(mode: str) -> list[tuple[int, bool, bool]]:
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
    """Mean of ``predict`` over the views of ``mode``, each mapped back to ``x``'s orientation."""
    views = _views(mode)
    total = None
    for k, rows, cols in views:
        y = _undo(predict(_apply(x, k, rows, cols)), k, rows, cols)
        total = y if total is None else total + y
    return total / len(views)
