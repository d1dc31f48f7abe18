from types import SimpleNamespace

import pytest
import torch

from src.models.callbacks import StopOnNonFiniteLoss
from src.utils.errors import UserError


def feed(callback, losses):
    trainer = SimpleNamespace(global_step=0, precision="bf16-mixed")
    for step, value in enumerate(losses, 1):
        trainer.global_step = step
        callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(value)}, None, step)


def test_a_run_of_non_finite_losses_stops_with_one_line():
    with pytest.raises(UserError, match=r"nan for 3 steps \(step 4, precision bf16-mixed\).*32-true") as err:
        feed(StopOnNonFiniteLoss(patience=3), [0.7, float("nan"), float("nan"), float("nan"), 0.5])
    assert "\n" not in str(err.value)


def test_isolated_non_finite_steps_are_tolerated():
    feed(StopOnNonFiniteLoss(patience=3), [0.7, float("inf"), 0.6, float("nan"), float("nan"), 0.5, 0.4])
    feed(StopOnNonFiniteLoss(patience=1), [0.7, 0.6])
    with pytest.raises(UserError):
        feed(StopOnNonFiniteLoss(patience=1), [0.7, float("inf")])
