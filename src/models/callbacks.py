"""Callbacks of the training runs (``configs/callbacks``)."""

from __future__ import annotations

from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from src.utils.errors import UserError


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


class StopOnNonFiniteLoss(Callback):
    """Stop a run whose training loss has been NaN or infinite for ``patience`` steps in a row, with a one-line error.

    Lightning trains on after the weights turn NaN: every later validation scores 0 (or NaN), the checkpoints
    saved before stay, and the run ends looking finished. The 3-D demo in ``bf16-mixed`` did this after 140 of
    its 240 steps (README, Stage 2c). One non-finite step is tolerated up to ``patience`` (a float16 run's
    loss scaler skips an overflowing step and goes on); the checkpoints already written are kept."""

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
            raise UserError(f"the training loss has been {loss.item()} for {self.bad} steps (step {trainer.global_step}, "
                            f"precision {trainer.precision}): the weights diverged; the checkpoints written so far are "
                            "kept; train again with trainer.precision=32-true or a lower model.optimizer.lr")
