"""Named options (views, blend and threshold modes, test-time augmentations, augmentation schemes, ...):
one look-up that turns an unknown name into one clear line naming the setting and the valid choices.

The registries themselves live next to what they name (``VIEW_AXES`` in :mod:`src.data.registry`,
``SCHEMES`` in :mod:`src.data.transforms`, ...); this module only looks names up in them, the way MONAI's
``look_up_option`` does (a mapping gives its entry, a collection the name; a close misspelling is named).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from src.utils.errors import UserError


def look_up(value: Any, supported: Mapping | Collection, what: str) -> Any:
    """``supported[value]`` for a mapping (a registry), ``value`` itself for a collection of names.

    An unknown ``value`` raises :class:`UserError`: ``<what>: unknown 'x' (did you mean 'y'?); choose one of a, b, c``.
    """
    names = list(supported)
    if isinstance(value, str) and value in names:
        return supported[value] if isinstance(supported, Mapping) else value
    close = difflib.get_close_matches(str(value), [str(n) for n in names], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"{what}: unknown {value!r}{hint}; choose one of {', '.join(map(str, names))}")


def look_up_all(values, supported: Mapping | Collection, what: str) -> list:
    """:func:`look_up` of each of ``values`` (a name or a list of names)."""
    values = [values] if isinstance(values, str) else list(values)
    return [look_up(v, supported, what) for v in values]
