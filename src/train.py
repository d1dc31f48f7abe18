"""Stage 1 (and later stages): train a segmentation model from a Hydra config.

    python -m src.train                                  # fold 0, UNet++ / EfficientNet-B5, the recipe
    python -m src.train data.fold=1 model.net.encoder_name=tu-tf_efficientnet_b6
    python -m src.train experiment=demo paths.data_dir=data/phantom
    python -m src.train trainer=ddp                      # the recipe's 2 GPUs
    python -m src.train train=false ckpt_path=...ckpt    # validate a checkpoint

The run folder (``logs/train/runs/<run_name>/<fold>``) receives the checkpoints, logs, the composed
config (``.hydra/config.yaml``, and ``config.yaml`` resolved) and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from src.utils.entry import hydra_main, resolved_config
from src.utils.errors import raises_user_errors

log = logging.getLogger(__name__)


@raises_user_errors  # a user mistake surfaces as UserError, also when Hydra or Lightning wrapped it
def train(cfg: DictConfig) -> dict[str, float]:
    """Instantiate everything from ``cfg``, fit (or validate), return the final metrics."""
    import lightning as L

    from src.utils.instantiate import instantiate_callbacks, instantiate_loggers

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"), progress_bar=bool(cfg.trainer.get("enable_progress_bar", True)))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.is_global_zero:
        resolved = resolved_config(cfg)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        for logger in loggers:
            logger.log_hyperparams({"config": resolved, "run_name": cfg.run_name, "fold": cfg.data.fold})
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    else:
        trainer.validate(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        checkpoint = getattr(trainer, "checkpoint_callback", None)
        summary = {
            "run_name": cfg.run_name,
            "fold": cfg.data.fold,
            "metrics": metrics,
            "best_model_path": getattr(checkpoint, "best_model_path", None) or None,
            "best_model_score": float(checkpoint.best_model_score) if getattr(checkpoint, "best_model_score", None) is not None else None,
        }
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
        log.info("run folder: %s", output_dir)
    return metrics


@hydra_main("train")
def main(cfg: DictConfig) -> float | None:
    from lightning.pytorch.utilities import rank_zero_only

    if cfg.get("extras", {}).get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if cfg.get("extras", {}).get("print_config") and rank_zero_only.rank == 0:
        from src.utils.config_tree import print_config_tree

        print_config_tree(cfg)
    value = train(cfg).get(cfg.get("optimized_metric"))
    if value is not None:
        log.info("%s = %.6f", cfg.optimized_metric, value)
    return value


if __name__ == "__main__":
    main()
