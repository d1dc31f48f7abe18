"""A safe phantom build: into a temporary sibling, marked, renamed when complete; refusal rules.

:func:`build_phantom` leaves a folder that already holds the same build alone, refuses a non-empty
folder it did not create (or one holding another seed, size or style, unless ``force``), and sweeps
its own abandoned temporaries.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from src.data.phantom.acquisition import style_of
from src.data.phantom.layout import write_phantom
from src.data.phantom.specs import check_seed, size_preset
from src.utils.errors import UserError
from src.utils.files import TMP_TAG, atomic_output, sweep_stale

GENERATOR = "src.data.phantom"
FORMAT_VERSION = 2  # 2: acquisition model and styles
MARKER_NAME = ".phantom.json"
BUILDING_MARKER_NAME = ".phantom-building"


def marker_content(seed: int, size: str, kidneys: dict, style: str = "A") -> dict:
    """What ``.phantom.json`` holds."""
    return {"generator": GENERATOR, "format_version": FORMAT_VERSION, "seed": seed, "size": size, "style": style,
            "kidneys": kidneys}


def read_marker(out: Path) -> dict | None:
    """The marker of ``out``, None when there is none; :class:`UserError` for a foreign or broken one."""
    path = out / MARKER_NAME
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("generator") != GENERATOR:
        raise UserError(f"{path} is not a readable phantom marker; refusing to touch {out}")
    for entry in marker.get("kidneys", {}).values():
        entry["shape"] = tuple(entry["shape"])
        entry["window"] = tuple(entry["window"])
    return marker


def is_same_build(marker: dict, seed: int, size: str, style: str = "A") -> bool:
    """Whether ``marker`` describes the build that ``seed``, ``size`` and ``style`` would write."""
    return (marker.get("seed") == seed and marker.get("size") == size and marker.get("style", "A") == style
            and marker.get("format_version") == FORMAT_VERSION)


def existing_build(out: Path, seed: int, size: str, force: bool, style: str = "A") -> dict | None:
    """Check ``out`` before building: the marker if the same build is already there, else None.

    Raises :class:`UserError` when ``out`` is a file, is non-empty without our marker, or holds
    another phantom and ``force`` is false.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    marker = read_marker(out)
    if marker is None:
        if any(out.iterdir()):
            raise UserError(
                f"--out {out} is a non-empty folder without a phantom marker; choose an empty or new folder"
            )
        return None
    if is_same_build(marker, seed, size, style) and not force:
        return marker
    if not force:
        raise UserError(
            f"--out {out} holds a phantom of seed {marker.get('seed')} size {marker.get('size')} style {marker.get('style', 'A')} "
            f"(version {marker.get('format_version')}); pass --force to replace it"
        )
    return None


def make_room(out: Path) -> None:
    """Clear the way for a finished build: remove an empty ``out`` or a previous phantom (our marker);
    refuse anything else (the finished build then stays at its temporary name)."""
    if (out / MARKER_NAME).exists():
        shutil.rmtree(out)
        return
    try:
        out.rmdir()
    except OSError:
        raise UserError(f"--out {out} was filled by someone else during the build; "
                        f"left the phantom next to it in {out.name}{TMP_TAG}*") from None


def build_phantom(out, seed: int = 0, size: str = "tiny", force: bool = False, style: str = "A") -> dict:
    """Build the phantom dataset in ``out`` (see the module docstring for the layout).

    Returns the marker content (``seed``, ``size``, ``kidneys``: per folder its ``shape`` (Z, H, W),
    ``voxel_um``, ``first_slice``, ``window``, ``vessel_fraction``, ``labelled_fraction``, ...) plus
    ``out``, ``existed`` (True when the same build was already there and nothing was written)
    and ``seconds``.
    """
    started = time.perf_counter()
    seed = check_seed(seed)
    size_preset(size)
    style = style_of(style).name
    out = Path(out).absolute()
    existing = existing_build(out, seed, size, force, style)
    if existing is not None:
        return {**existing, "out": str(out), "existed": True, "seconds": time.perf_counter() - started}
    sweep_stale(out, require=BUILDING_MARKER_NAME)
    with atomic_output(out, on_existing=make_room) as tmp:
        tmp.mkdir(parents=True)
        (tmp / BUILDING_MARKER_NAME).write_text(str(os.getpid()))  # proves an abandoned temporary is ours
        marker = marker_content(seed, size, write_phantom(tmp, seed, size, style), style)
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n")
        (tmp / BUILDING_MARKER_NAME).unlink()
    return {**marker, "out": str(out), "existed": False, "seconds": time.perf_counter() - started}
