"""Build Lightning callbacks and loggers from their Hydra config groups."""

from __future__ import annotations

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def _instantiate_all(cfg: DictConfig | None) -> list:
    if not cfg:
        return []
    return [hydra.utils.instantiate(spec) for spec in cfg.values() if isinstance(spec, DictConfig) and "_target_" in spec]


def instantiate_callbacks(cfg: DictConfig | None, progress_bar: bool = True) -> list[Callback]:
    """The callbacks of ``cfg``; without ``progress_bar`` (``trainer.enable_progress_bar=false``) the progress bar
    callback is left out, which Lightning would otherwise refuse with an exception."""
    callbacks = _instantiate_all(cfg)
    return callbacks if progress_bar else [c for c in callbacks if not isinstance(c, ProgressBar)]


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_all(cfg)
