"""Run-length encoding in the competition convention.

Row-major (C order) flattening, 1-indexed ``start length`` pairs separated by single spaces;
an empty mask is written ``1 0`` (an empty string would be read back as NaN by pandas).
"""

from __future__ import annotations

import numpy as np

from src.utils.errors import UserError

EMPTY_RLE = "1 0"


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (any dtype, non-zero = foreground) as a competition RLE string."""
    flat = np.asarray(mask).ravel() != 0
    if not flat.any():
        return EMPTY_RLE
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    runs = np.empty(starts.size * 2, dtype=np.int64)
    runs[0::2] = starts + 1
    runs[1::2] = ends - starts
    return " ".join(map(str, runs.tolist()))


def rle_decode(rle: object, shape: tuple[int, int], name: str = "rle") -> np.ndarray:
    """Decode a competition RLE string into a uint8 mask (0/1) of ``shape``.

    Raises :class:`UserError` naming ``name`` for malformed input: an odd number of values,
    non-integers, starts below 1, negative lengths, runs out of order or past the end of the mask.
    A missing value (NaN/None/empty string) decodes to an empty mask, as ``1 0`` does.
    """
    height, width = int(shape[0]), int(shape[1])
    size = height * width
    out = np.zeros(size, dtype=np.uint8)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return out.reshape(height, width)
    text = str(rle).strip()
    if not text:
        return out.reshape(height, width)
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise UserError(f"{name}: malformed RLE, expected integers 'start length ...', got {text[:40]!r}") from None
    if values.size % 2:
        raise UserError(f"{name}: malformed RLE, odd number of values ({values.size})")
    starts, lengths = values[0::2] - 1, values[1::2]
    if (starts < 0).any() or (lengths < 0).any():
        raise UserError(f"{name}: malformed RLE, starts must be >= 1 and lengths >= 0")
    ends = starts + lengths
    nonempty = lengths > 0
    starts, ends = starts[nonempty], ends[nonempty]
    if starts.size:
        if (starts[1:] < ends[:-1]).any():
            raise UserError(f"{name}: malformed RLE, runs overlap or are out of order")
        if ends[-1] > size:
            raise UserError(
                f"{name}: RLE runs past the end of a {height}x{width} mask (last run ends at pixel {int(ends[-1])})"
            )
        # mark run starts with +1 and ends with -1, the cumulative sum is the mask
        marks = np.zeros(size + 1, dtype=np.int8)
        np.add.at(marks, starts, 1)
        np.add.at(marks, ends, -1)
        out = np.cumsum(marks[:-1], dtype=np.int8).astype(np.uint8)
    return out.reshape(height, width)
