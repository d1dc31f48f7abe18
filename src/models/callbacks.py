"""Callbacks of the training runs (``configs/callbacks``)."""

from __future__ import annotations

from typing import Any

from lightning import Callback, LightningModule, Trainer


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
