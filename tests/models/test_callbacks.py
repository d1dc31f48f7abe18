from types import SimpleNamespace

import lightning as L
import pytest
import torch

from src.models.callbacks import SkipNonFiniteGradients, StopOnNonFiniteLoss
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


class NaNGradientAt(L.LightningModule):
    """A linear model whose gradient is poisoned with NaN at the given steps (what oneDNN's bf16 conv3d does now and then)."""

    def __init__(self, poisoned: set[int]):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.poisoned = poisoned
        self.weights_before: dict[int, torch.Tensor] = {}
        self.weights_after: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        self.weights_before[self.global_step] = self.layer.weight.detach().clone()
        return (self.layer(batch[0]) - batch[1]).pow(2).mean()

    def on_after_backward(self):
        if self.global_step in self.poisoned:
            self.layer.weight.grad[0, 0] = float("nan")

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.weights_after[self.global_step - 1] = self.layer.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
        return torch.utils.data.DataLoader(data, batch_size=2)


def fit(module, callback, max_steps):
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, callbacks=[callback], logger=False, precision="32-true",
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module)
    return trainer


def test_a_step_with_a_nan_gradient_is_skipped_and_training_goes_on():
    module, callback = NaNGradientAt({2, 5}), SkipNonFiniteGradients(patience=3)
    fit(module, callback, max_steps=7)
    assert callback.skipped == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    for step in (2, 5):  # the poisoned steps left the weights as they were
        assert torch.equal(module.weights_before[step], module.weights_after[step])
    for step in (1, 3, 6):  # the others trained
        assert not torch.equal(module.weights_before[step], module.weights_after[step])


def test_without_the_callback_one_nan_gradient_ruins_the_weights():
    """What the callback guards against: AdamW applies the NaN and every later weight is NaN."""
    module = NaNGradientAt({2})
    L.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, precision="32-true").fit(module)
    assert torch.isnan(module.layer.weight).any()


def test_non_finite_gradients_in_a_row_stop_the_run_with_one_line():
    with pytest.raises(UserError, match=r"non-finite for 3 steps in a row \(step \d+, precision 32-true\).*32-true") as err:
        fit(NaNGradientAt({1, 2, 3, 4}), SkipNonFiniteGradients(patience=3), max_steps=8)
    assert "\n" not in str(err.value)


def test_a_run_with_a_loss_scaler_is_left_to_the_scaler():
    """16-mixed's GradScaler skips overflowing steps itself (and overflows on purpose while it calibrates)."""
    callback = SkipNonFiniteGradients(patience=1)
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([float("inf"), 1.0])
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=object()), global_step=1, precision="16-mixed")
    callback.on_before_optimizer_step(trainer, None, torch.optim.SGD([weight], lr=0.1))
    assert weight.grad is not None and callback.skipped == 0
