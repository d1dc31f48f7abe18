"""Build Lightning callbacks and loggers from their Hydra config groups."""

from __future__ import annotations

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def _instantiate_all(cfg: DictConfig | None) -> list:
    if not cfg:
        return []
    return [hydra.utils.instantiate(spec) for spec in cfg.values() if isinstance(spec, DictConfig) and "_target_" in spec]


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_all(cfg)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_all(cfg)
