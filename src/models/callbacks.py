"""Callbacks of the training runs (``configs/callbacks``)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from src.utils.errors import UserError

log = logging.getLogger(__name__)


class ValidateAtMaxSteps(Callback):
    """Validate the weights a run ends with when ``trainer.max_steps`` stops it inside an epoch.

    Lightning validates at the end of each epoch, so a run whose ``max_steps`` falls inside one (the demo's
    200 and 400 steps over epochs of 63-94 batches) ended without validating its last steps, and
    ``ModelCheckpoint``, saving at the end of the training epoch, named that checkpoint with the previous
    validation's score and recorded that validation in it: a tie with the best epoch, which the newest-on-tie
    rule of :func:`src.inference.checkpoints.best_of` then picked (unvalidated weights, another epoch's
    threshold). Lightning validates before a requested stop, so asking it to stop at the last step makes it
    validate the final weights; a run ending on an epoch boundary validates once, as before."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


def diverged(what: str, trainer: Trainer) -> UserError:
    """The one-line error of the two non-finite guards below."""
    return UserError(f"{what} (step {trainer.global_step}, precision {trainer.precision}): the weights diverged; the "
                     "checkpoints written so far are kept; train again with trainer.precision=32-true or a lower "
                     "model.optimizer.lr")


class StopOnNonFiniteLoss(Callback):
    """Stop a run whose training loss has been NaN or infinite for ``patience`` steps in a row, with a one-line error.

    Lightning trains on after the weights turn NaN: every later validation scores 0 (or NaN), the checkpoints
    saved before stay, and the run ends looking finished. The 3-D demo in ``bf16-mixed`` did this after 140 of
    its 240 steps, from one NaN gradient, which :class:`SkipNonFiniteGradients` now skips (README, Stage 2c).
    One non-finite step is tolerated up to ``patience`` (a float16 run's loss scaler skips an overflowing step
    and goes on); the checkpoints already written are kept. Without a loss scaler a NaN loss also makes NaN
    gradients, which :class:`SkipNonFiniteGradients` counts first; this guard is the one a float16 run has."""

    def __init__(self, patience: int = 3):
        self.patience = max(1, int(patience))
        self.bad = 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self.bad = 0 if bool(torch.isfinite(loss.detach()).all()) else self.bad + 1
        if self.bad >= self.patience:
            raise diverged(f"the training loss has been {loss.item()} for {self.bad} steps", trainer)


class SkipNonFiniteGradients(Callback):
    """Skip an optimiser step whose gradients hold a NaN or an infinity, as float16's loss scaler does.

    Without a loss scaler (float32, ``bf16-mixed``) one non-finite gradient reaches the optimiser, and after
    that step every weight it touches is NaN. On a CPU, PyTorch 2.14's oneDNN bfloat16 ``conv3d`` returns a NaN
    weight gradient now and then for finite inputs (1 to 11 calls in 1500 with 32 channels on 2^3 voxels,
    batch 2: the 3-D demo's bottleneck; not reproducible on a repeat of the same call), which is how the
    3-D demo's bf16 runs diverged (README, Stage 2c). A step with non-finite gradients is skipped (every
    gradient dropped before clipping and the optimiser; the scheduler steps on), counted in
    ``train/skipped_steps`` and reported at the end; ``patience`` skipped steps in a row stop the run with a
    one-line error (then the weights diverged, or nothing trains). A run with a loss scaler (``16-mixed``) is
    left to the scaler. The check is one reduction over the gradients per step."""

    def __init__(self, patience: int = 3):
        self.patience = max(1, int(patience))
        self.in_a_row = 0
        self.skipped = 0

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if bool(torch.isfinite(norm)):
            self.in_a_row = 0
            return
        for p in params:
            p.grad = None
        self.in_a_row += 1
        self.skipped += 1
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False, reduce_fx="max")
        if self.in_a_row >= self.patience:
            raise diverged(f"the gradients have been non-finite for {self.in_a_row} steps in a row", trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.skipped:
            log.warning("skipped %d of %d optimiser steps whose gradients were not finite (precision %s)",
                        self.skipped, trainer.global_step, trainer.precision)
