"""Paths from ``SETTINGS.json`` (the competition's settings file), resolved against the repo root.

``SETTINGS.json`` is the single place paths are typed: ``parse_settings_json.py`` prints them for the
shell scripts, and Hydra's ``paths`` config reads them through the ``settings`` resolver
(``${settings:RAW_DATA_DIR}``). Relative values resolve against the repository root, so every
command works from any working directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from src.utils.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_ENV = "BVS_SETTINGS"  # optional: point at another SETTINGS.json
REQUIRED_KEYS = ("RAW_DATA_DIR", "LOGS_DIR", "MODEL_CHECKPOINT_DIR", "SUBMISSION_DIR")


def settings_path() -> Path:
    return Path(os.environ.get(SETTINGS_ENV, REPO_ROOT / "SETTINGS.json"))


def load_settings(path: Path | None = None) -> dict[str, str]:
    """Read the settings file; a missing or unreadable file is a :class:`UserError`."""
    path = Path(path) if path is not None else settings_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: settings file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read settings file ({err})") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of KEY: path")
    return data


def setting(key: str, path: Path | None = None) -> Path:
    """The absolute path stored under ``key`` (relative values resolve against the repo root)."""
    data = load_settings(path)
    if key not in data:
        known = ", ".join(sorted(data))
        raise UserError(f"unknown settings key {key!r} in {path or settings_path()} (known: {known})")
    value = data[key]
    if not isinstance(value, str) or not value:
        raise UserError(f"settings key {key!r} must be a non-empty path string, got {value!r}")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def register_omegaconf_resolver() -> None:
    """Register ``${settings:KEY}`` for Hydra/OmegaConf configs (idempotent); ``REPO_ROOT`` is the checkout."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("settings"):
        OmegaConf.register_new_resolver("settings", lambda key: str(REPO_ROOT if key == "REPO_ROOT" else setting(key)))
