"""LightningModule for 2.5-D segmentation: an smp network, Boundary DoU loss, whole-volume validation.

Validation runs MONAI's sliding window over each whole slice on the module's device and streams the
predictions of the validation volume, slice by slice in order, into one surface-Dice accumulator per
threshold (``val/sd@<th>``), plus the counts of ``val/dice``. Nothing of the volume is kept: the
accumulators hold integer histograms, which add up exactly across DDP processes, each of which
validates a contiguous range of slices; the logged values equal the single-process ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import segmentation_models_pytorch as smp
import torch
from lightning import LightningModule
from monai.inferers import sliding_window_inference
from omegaconf import DictConfig, OmegaConf

from src.metrics.surface_dice import SurfaceDiceAccumulator, score_from_histogram
from src.models.visuals import overlay


def build_net(net: dict) -> torch.nn.Module:
    """The segmentation network described by a config dict (``smp.create_model`` arguments)."""
    return smp.create_model(**net)


def step_scheduled_optimizers(module: LightningModule, optimizer_factory: Callable, scheduler_factory: Callable | None) -> dict:
    """The optimiser over ``module``'s parameters and, if any, its schedule stepped every optimiser step."""
    optimizer = optimizer_factory(params=module.parameters())
    if scheduler_factory is None:
        return {"optimizer": optimizer}
    scheduler = scheduler_factory(optimizer=optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class SegmentationModule2D(LightningModule):
    def __init__(
        self,
        net: dict,
        optimizer: Callable,
        scheduler: Callable | None,
        loss: torch.nn.Module,
        val_window: dict,
        sd_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
        dice_threshold: float = 0.5,
        log_images_every_n_steps: int = 200,
        compile: bool = False,
    ):
        super().__init__()
        net, val_window = _plain(net), _plain(val_window)
        sd_thresholds = tuple(float(t) for t in _plain(sd_thresholds))
        self.save_hyperparameters({"net": net, "val_window": val_window, "sd_thresholds": sd_thresholds,
                                   "dice_threshold": dice_threshold, "log_images_every_n_steps": log_images_every_n_steps,
                                   "compile": compile}, logger=True)
        self.net = build_net(net)
        self.criterion = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._reset_validation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], batch["mask"]
        logits = self(x)
        loss = self.criterion(logits, y)
        with torch.no_grad():
            pred = (logits.detach() > 0).float()  # sigmoid > 0.5
            dice = 2 * (pred * y).sum() / (pred.sum() + y.sum()).clamp(min=1)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        self.log("train/dice", dice, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        if self._log_images_now(batch_idx, training=True):
            self._log_images("train", x, y, torch.sigmoid(logits.detach().float()))
        return loss

    # ------------------------------------------------------------------ validation
    def _reset_validation(self) -> None:
        self._sd: list[SurfaceDiceAccumulator] = []
        self._sums = torch.zeros(5, dtype=torch.float64)  # intersection, pred, target, loss * n, n

    def on_validation_epoch_start(self) -> None:
        self._sd = [SurfaceDiceAccumulator(self.device) for _ in self.hparams.sd_thresholds]
        self._sums = torch.zeros(5, dtype=torch.float64, device=self.device)

    def sliding_window(self, x: torch.Tensor) -> torch.Tensor:
        w = self.hparams.val_window
        roi = w["roi_size"]
        roi = (roi, roi) if isinstance(roi, int) else tuple(roi)
        return sliding_window_inference(
            x, roi_size=roi, sw_batch_size=w.get("sw_batch_size", 8), predictor=self.net,
            overlap=w.get("overlap", 0.25), mode=w.get("mode", "gaussian"), padding_mode=w.get("padding_mode", "reflect"),
            progress=False,
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, y = batch["image"], batch["mask"]
        logits = self.sliding_window(x)
        probs = torch.sigmoid(logits.float())
        context = batch["context"].bool()
        scored = ~context
        truth = y[:, 0] > 0.5
        if context[0]:  # the slice before this process's range: it only primes the surface metric
            for th, acc in zip(self.hparams.sd_thresholds, self._sd):
                acc.set_start(probs[0, 0] > th, truth[0])
        if scored.any():
            p, t, lg = probs[scored], y[scored], logits[scored]
            hard = (p > self.hparams.dice_threshold).double()
            n = int(scored.sum())
            loss = self.criterion(lg, t).double()
            self._sums += torch.stack([(hard * t).sum(), hard.sum(), t.double().sum(), loss * n, torch.tensor(n, dtype=torch.float64, device=self.device)])
            for th, acc in zip(self.hparams.sd_thresholds, self._sd):
                acc.update(p[:, 0] > th, truth[scored])
        if batch["last"][-1]:
            for acc in self._sd:
                acc.close()
        if self._log_images_now(batch_idx, training=False):
            self._log_images("val", x, y, probs)

    def on_validation_epoch_end(self) -> None:
        hist = torch.stack([acc.hist for acc in self._sd])
        sums = self._sums
        distributed = self.trainer.world_size > 1
        if distributed:
            hist = self.trainer.strategy.reduce(hist, reduce_op="sum")
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        inter, pred_sum, true_sum, loss_sum, n = sums.tolist()
        values = {
            "val/loss": loss_sum / max(n, 1.0),
            "val/dice": 2 * inter / (pred_sum + true_sum) if pred_sum + true_sum > 0 else 0.0,
        }
        for th, h in zip(self.hparams.sd_thresholds, hist):
            sd = score_from_histogram(h)
            values[f"val/sd@{th:g}"] = 0.0 if sd != sd else sd  # NaN (empty truth and prediction) -> 0
        # every process holds the same totals; "max" keeps the value exact where "mean" could round it
        for name, value in values.items():
            self.log(name, value, prog_bar=name in ("val/dice", "val/sd@0.5"), sync_dist=distributed, reduce_fx="max")

    # ------------------------------------------------------------------ images
    def _log_images_now(self, batch_idx: int, training: bool) -> bool:
        every = self.hparams.log_images_every_n_steps
        if not every or self.trainer.sanity_checking:
            return False
        step = self.global_step if training else batch_idx
        return step % every == 0

    def _log_images(self, stage: str, x: torch.Tensor, y: torch.Tensor, probs: torch.Tensor) -> None:
        if self.global_rank != 0:
            return
        picture = None
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                picture = overlay(x, y, probs) if picture is None else picture
                experiment.add_image(f"{stage}/overlay", picture, global_step=self.global_step, dataformats="HWC")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict:
        return step_scheduled_optimizers(self, self.optimizer_factory, self.scheduler_factory)
