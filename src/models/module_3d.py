"""LightningModule for 3-D segmentation: MONAI DynUNet, the same Boundary DoU loss in 3-D, SGD.

Validation scores fixed crops: loss, vessel Dice at 0.5 and the surface Dice of the crops (each crop
a small volume of its own; their integer histograms are pooled and summed over DDP processes, so
the value does not depend on how crops are split). Every ``log_images_every_n_steps`` batches the
mean projections of image, target and prediction along the three axes go to TensorBoard.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import DynUNet

from src.metrics.surface_dice import SurfaceDiceAccumulator
from src.models.base import SegmentationModule, plain


def build_net_3d(net: dict) -> torch.nn.Module:
    """A DynUNet from its config (spatial_dims, channels, kernel_size, strides, upsample_kernel_size, dropout...)."""
    return DynUNet(**net)


def projections(image: torch.Tensor, target: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) picture: mean projections along z, y, x side by side (grey image, red truth, green prediction)."""
    tiles = []
    for axis in (0, 1, 2):
        grey = image[0, 0].float().mean(axis)
        red, green = target[0, 0].float().amax(axis), probs[0, 0].float().amax(axis)
        tile = torch.stack([0.7 * grey + 0.3 * red, 0.7 * grey + 0.3 * green, 0.7 * grey], dim=-1)
        tiles.append(tile.clamp(0, 1))
    height = max(t.shape[0] for t in tiles)
    tiles = [torch.nn.functional.pad(t, (0, 0, 0, 0, 0, height - t.shape[0])) for t in tiles]
    return (torch.cat(tiles, dim=1) * 255).to(torch.uint8).cpu()


class SegmentationModule3D(SegmentationModule):
    """A MONAI DynUNet trained and validated on 3-D crops (the module docstring); ``sd_threshold`` is the
    threshold of the logged ``val/sd@<th>``."""

    def __init__(
        self,
        net: dict,
        optimizer: Callable,
        scheduler: Callable | None,
        loss: torch.nn.Module,
        dice_threshold: float = 0.5,
        sd_threshold: float = 0.5,
        log_images_every_n_steps: int = 200,
    ):
        super().__init__()
        net = plain(net)
        self.save_hyperparameters({"net": net, "net_kind": "dynunet", "dice_threshold": dice_threshold,
                                   "sd_threshold": sd_threshold, "log_images_every_n_steps": log_images_every_n_steps})
        self.net = build_net_3d(net)
        self.criterion = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def sd_thresholds(self) -> tuple[float, ...]:
        return (self.hparams.sd_threshold,)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], batch["mask"]
        logits = self(x)
        loss = self.criterion(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        if self.images_now(batch_idx):
            self._log_images("train", x, y, torch.sigmoid(logits.detach()))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, y = batch["image"], batch["mask"]
        logits = self(x)
        probs = torch.sigmoid(logits.float())
        n = x.shape[0]
        self.totals.add(probs > self.hparams.dice_threshold, y, self.criterion(logits, y), n)
        for i in range(n):  # each crop is a volume of its own
            acc = SurfaceDiceAccumulator(self.device)
            acc.update(probs[i, 0] > self.hparams.sd_threshold, y[i, 0] > 0.5)
            acc.close()
            self.totals.add_surface(0, acc.hist)
        if self.images_now(batch_idx, training=False):
            self._log_images("val", x, y, probs)

    def _log_images(self, stage: str, x, y, probs) -> None:
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(f"{stage}/projections", projections(x, y, probs).numpy(), self.global_step, dataformats="HWC")
