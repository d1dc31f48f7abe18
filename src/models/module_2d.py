"""LightningModule for 2.5-D segmentation: an smp network, Boundary DoU loss, whole-volume validation.

Validation runs MONAI's sliding window over each whole slice on the module's device and streams the
predictions of the validation volume, slice by slice in order, into one surface-Dice accumulator per
threshold (``val/sd@<th>``), plus the counts of ``val/dice``. Nothing of the volume is kept: the
accumulators hold integer histograms, which add up exactly across DDP processes, each of which
validates a contiguous range of slices; the logged values equal the single-process ones.
"""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch

from src.inference.sliding import sliding_window
from src.metrics.surface_dice import SurfaceDiceAccumulator
from src.models.base import SegmentationModule, plain
from src.models.visuals import overlay
from src.utils.errors import UserError
from src.utils.sizes import size_tuple

VALIDATED = "validated"  # model.predict_threshold: chosen from the checkpoint's val/sd@<th> (checkpoints.validated_threshold)


def check_predict_threshold(value: float | str) -> float | str:
    """``model.predict_threshold``: a probability in (0, 1) or ``validated``; anything else is a one-line error."""
    if isinstance(value, str) and value.strip().lower() == VALIDATED:
        return VALIDATED
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"model.predict_threshold must be a probability or '{VALIDATED}', got {value!r}") from None
    if not 0.0 < number < 1.0:
        raise UserError(f"model.predict_threshold must lie strictly between 0 and 1, got {number}")
    return number


def build_net(net: dict) -> torch.nn.Module:
    """The segmentation network described by a config dict (``smp.create_model`` arguments)."""
    return smp.create_model(**net)


class SegmentationModule2D(SegmentationModule):
    """A 2.5-D smp network trained on crops and validated on whole slices of a validation volume (the
    module docstring); ``sd_thresholds`` are the thresholds of the logged ``val/sd@<th>``."""

    prog_bar_metrics = ("val/dice", "val/sd@0.5")

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
        predict_threshold: float | str = 0.5,
        predict_threshold_margin: float = 0.05,
    ):
        super().__init__()
        net, val_window = plain(net), plain(val_window)
        sd_thresholds = tuple(float(t) for t in plain(sd_thresholds))
        predict_threshold = check_predict_threshold(predict_threshold)
        if not 0.0 <= float(predict_threshold_margin) < 1.0:
            raise UserError(f"model.predict_threshold_margin must be a fraction in [0, 1), got {predict_threshold_margin}")
        self.save_hyperparameters({"net": net, "val_window": val_window, "sd_thresholds": sd_thresholds,
                                   "dice_threshold": dice_threshold, "log_images_every_n_steps": log_images_every_n_steps,
                                   "compile": compile, "predict_threshold": predict_threshold,
                                   "predict_threshold_margin": float(predict_threshold_margin)}, logger=True)
        self.net = build_net(net)
        self.criterion = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._sd: list[SurfaceDiceAccumulator] = []

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
        if self.images_now(batch_idx, training=True):
            self._log_images("train", x, y, torch.sigmoid(logits.detach().float()))
        return loss

    # ------------------------------------------------------------------ validation
    def sd_thresholds(self) -> tuple[float, ...]:
        return self.hparams.sd_thresholds

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._sd = [SurfaceDiceAccumulator(self.device) for _ in self.hparams.sd_thresholds]

    def sliding_window(self, x: torch.Tensor) -> torch.Tensor:
        w = self.hparams.val_window
        return sliding_window(x, self.net, size_tuple(w["roi_size"], 2, "model.val_window.roi_size"), w.get("sw_batch_size", 8),
                              w.get("overlap", 0.25), w.get("mode", "gaussian"), w.get("padding_mode", "reflect"))

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
            self.totals.add(p > self.hparams.dice_threshold, t, self.criterion(lg, t), int(scored.sum()))
            for th, acc in zip(self.hparams.sd_thresholds, self._sd):
                acc.update(p[:, 0] > th, truth[scored])
        if batch["last"][-1]:
            for acc in self._sd:
                acc.close()
        if self.images_now(batch_idx, training=False):
            self._log_images("val", x, y, probs)

    def on_validation_epoch_end(self) -> None:
        for i, acc in enumerate(self._sd):
            self.totals.add_surface(i, acc.hist)
        super().on_validation_epoch_end()

    # ------------------------------------------------------------------ images
    def _log_images(self, stage: str, x: torch.Tensor, y: torch.Tensor, probs: torch.Tensor) -> None:
        if self.global_rank != 0:
            return
        picture = None
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                picture = overlay(x, y, probs) if picture is None else picture
                experiment.add_image(f"{stage}/overlay", picture, global_step=self.global_step, dataformats="HWC")
