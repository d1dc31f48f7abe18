"""LightningModule for 3-D segmentation: MONAI DynUNet, the same Boundary DoU loss in 3-D, SGD.

Validation scores fixed crops: loss, vessel Dice at 0.5 and the surface Dice of the crops (each crop
a small volume of its own; their integer histograms are pooled and summed over DDP processes, so
the value does not depend on how crops are split). Every ``log_images_every_n_steps`` batches the
mean projections of image, target and prediction along the three axes go to TensorBoard.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning import LightningModule
from monai.networks.nets import DynUNet

from src.metrics.surface_dice import SurfaceDiceAccumulator, score_from_histogram
from src.models.module_2d import _plain, step_scheduled_optimizers


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


class SegmentationModule3D(LightningModule):
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
        net = _plain(net)
        self.save_hyperparameters({"net": net, "net_kind": "dynunet", "dice_threshold": dice_threshold,
                                   "sd_threshold": sd_threshold, "log_images_every_n_steps": log_images_every_n_steps})
        self.net = build_net_3d(net)
        self.criterion = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._hist = torch.zeros(256 * 256, dtype=torch.int64)
        self._sums = torch.zeros(5, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], batch["mask"]
        logits = self(x)
        loss = self.criterion(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        if self._images_now(batch_idx):
            self._log_images("train", x, y, torch.sigmoid(logits.detach()))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._hist = torch.zeros(256 * 256, dtype=torch.int64, device=self.device)
        self._sums = torch.zeros(5, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, y = batch["image"], batch["mask"]
        logits = self(x)
        probs = torch.sigmoid(logits.float())
        hard = (probs > self.hparams.dice_threshold).double()
        n = x.shape[0]
        loss = self.criterion(logits, y).double()
        self._sums += torch.stack([(hard * y).sum(), hard.sum(), y.double().sum(), loss * n,
                                   torch.tensor(n, dtype=torch.float64, device=self.device)])
        for i in range(n):  # each crop is a volume of its own
            acc = SurfaceDiceAccumulator(self.device)
            acc.update(probs[i, 0] > self.hparams.sd_threshold, y[i, 0] > 0.5)
            acc.close()
            self._hist += acc.hist
        if self._images_now(batch_idx, training=False):
            self._log_images("val", x, y, probs)

    def on_validation_epoch_end(self) -> None:
        hist, sums = self._hist, self._sums
        distributed = self.trainer.world_size > 1
        if distributed:
            hist = self.trainer.strategy.reduce(hist, reduce_op="sum")
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        inter, pred_sum, true_sum, loss_sum, n = sums.tolist()
        sd = score_from_histogram(hist)
        values = {"val/loss": loss_sum / max(n, 1.0), "val/dice": 2 * inter / (pred_sum + true_sum) if pred_sum + true_sum else 0.0,
                  f"val/sd@{self.hparams.sd_threshold:g}": 0.0 if sd != sd else sd}
        for name, value in values.items():
            self.log(name, value, prog_bar=True, sync_dist=distributed, reduce_fx="max")

    def _images_now(self, batch_idx: int, training: bool = True) -> bool:
        every = self.hparams.log_images_every_n_steps
        if not every or self.trainer.sanity_checking or self.global_rank != 0:
            return False
        return (self.global_step if training else batch_idx) % every == 0

    def _log_images(self, stage: str, x, y, probs) -> None:
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(f"{stage}/projections", projections(x, y, probs).numpy(), self.global_step, dataformats="HWC")

    def configure_optimizers(self) -> dict:
        return step_scheduled_optimizers(self, self.optimizer_factory, self.scheduler_factory)
