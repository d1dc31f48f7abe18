"""What the 2-D and 3-D LightningModules share: the optimiser and its per-step schedule, the validation
totals (loss, Dice counts and surface-Dice histograms, summed exactly over DDP processes) and the
image-logging cadence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning import LightningModule
from omegaconf import DictConfig, OmegaConf

from src.metrics.surface_dice import N_CODES, score_from_histogram


def plain(cfg: Any) -> Any:
    """A config node as plain Python containers (what ``save_hyperparameters`` stores)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class ValidationTotals:
    """Sums over a validation epoch: Dice counts and the loss (``add``), and one surface-Dice histogram
    per threshold (``add_surface``); integers and float64 sums, so the totals over DDP processes are
    exact and the values do not depend on how the data was split."""

    def __init__(self, sd_thresholds: Sequence[float], device: torch.device | str = "cpu"):
        self.sd_thresholds = [float(t) for t in sd_thresholds]
        self.sums = torch.zeros(5, dtype=torch.float64, device=device)  # intersection, pred, target, loss * n, n
        self.hists = torch.zeros(len(self.sd_thresholds), N_CODES * N_CODES, dtype=torch.int64, device=device)

    def add(self, hard: torch.Tensor, target: torch.Tensor, loss: torch.Tensor, n: int) -> None:
        """Counts of a batch of ``n`` samples: ``hard`` the 0/1 prediction, ``loss`` their mean loss."""
        hard, target = hard.double(), target.double()
        self.sums += torch.stack([(hard * target).sum(), hard.sum(), target.sum(), loss.double() * n,
                                  torch.tensor(float(n), dtype=torch.float64, device=self.sums.device)])

    def add_surface(self, index: int, hist: torch.Tensor) -> None:
        """Add a surface-Dice histogram (:class:`SurfaceDiceAccumulator.hist`) to threshold ``index``."""
        self.hists[index] += hist.to(self.hists.device)

    def values(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """``val/loss``, ``val/dice`` and ``val/sd@<th>``; ``reduce`` sums a tensor over processes (DDP)."""
        sums, hists = self.sums, self.hists
        if reduce is not None:
            sums, hists = reduce(sums), reduce(hists)
        inter, pred_sum, true_sum, loss_sum, n = sums.tolist()
        values = {"val/loss": loss_sum / max(n, 1.0),
                  "val/dice": 2 * inter / (pred_sum + true_sum) if pred_sum + true_sum > 0 else 0.0}
        for th, hist in zip(self.sd_thresholds, hists):
            sd = score_from_histogram(hist)
            values[f"val/sd@{th:g}"] = 0.0 if sd != sd else sd  # NaN (empty truth and prediction) -> 0
        return values


class SegmentationModule(LightningModule):
    """Base of the 2-D and 3-D modules. Subclasses set ``self.net``, ``self.criterion``,
    ``self.optimizer_factory`` / ``self.scheduler_factory`` and save ``log_images_every_n_steps``;
    they fill ``self.totals`` in their ``validation_step``."""

    prog_bar_metrics: tuple[str, ...] | None = None  # None: all

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def sd_thresholds(self) -> Sequence[float]:
        """The thresholds of the logged ``val/sd@<th>``: each subclass says where it keeps them."""
        raise NotImplementedError(f"{type(self).__name__} must define sd_thresholds()")

    def on_validation_epoch_start(self) -> None:
        self.totals = ValidationTotals(self.sd_thresholds(), self.device)

    def on_validation_epoch_end(self) -> None:
        distributed = self.trainer.world_size > 1
        reduce = (lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")) if distributed else None
        values = self.totals.values(reduce)
        if not self.trainer.sanity_checking:  # the sanity check sees two batches, not the volume
            self.validation = {**values, "epoch": int(self.current_epoch), "step": int(self.global_step)}
        # every process holds the same totals; "max" keeps the value exact where "mean" could round it
        for name, value in values.items():
            prog_bar = self.prog_bar_metrics is None or name in self.prog_bar_metrics
            self.log(name, value, prog_bar=prog_bar, sync_dist=distributed, reduce_fx="max")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the metrics of the validation the checkpoint follows (``checkpoint["validation"]``): predict
        reads the threshold a model validated best at from it (``model.predict_threshold: validated``)."""
        validation = getattr(self, "validation", None)
        if validation:
            checkpoint["validation"] = dict(validation)

    def images_now(self, batch_idx: int, training: bool = True) -> bool:
        """Whether this step logs pictures (every ``log_images_every_n_steps``, rank 0, not in the sanity check)."""
        every = self.hparams.log_images_every_n_steps
        if not every or self.trainer.sanity_checking or self.global_rank != 0:
            return False
        return (self.global_step if training else batch_idx) % every == 0

    def configure_optimizers(self) -> dict:
        """The optimiser over the parameters and, if any, its schedule stepped every optimiser step."""
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
