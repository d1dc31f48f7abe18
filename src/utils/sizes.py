"""Size options that take an int or a list of the right length (MONAI's ``ensure_tuple_rep``)."""

from __future__ import annotations

from src.utils.errors import UserError


def size_tuple(value, dims: int, what: str) -> tuple[int, ...]:
    """``value`` (an int, or a list of ``dims`` ints) as ``dims`` positive ints; a one-line error naming ``what``."""
    from monai.utils import ensure_tuple_rep

    try:
        out = tuple(int(c) for c in ensure_tuple_rep(value, dims))
    except (ValueError, TypeError):
        raise UserError(f"{what} must be an int or a list of {dims} ints, got {value!r}") from None
    if min(out) < 1:
        raise UserError(f"{what} must be positive, got {value!r}")
    return out
