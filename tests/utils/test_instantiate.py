from lightning.pytorch.callbacks import ProgressBar

from src.models.callbacks import SkipNonFiniteGradients, StopOnNonFiniteLoss
from src.utils.entry import compose_config
from src.utils.instantiate import instantiate_callbacks


def test_the_default_callbacks_guard_against_non_finite_losses_and_gradients():
    callbacks = instantiate_callbacks(compose_config("train").callbacks)
    kinds = {type(c) for c in callbacks}
    assert {StopOnNonFiniteLoss, SkipNonFiniteGradients} <= kinds
    assert any(isinstance(c, ProgressBar) for c in callbacks)


def test_trainer_enable_progress_bar_false_leaves_the_progress_bar_out():
    """Lightning refuses a progress bar callback when the trainer has none; the override alone must be enough."""
    cfg = compose_config("train", ["trainer.enable_progress_bar=false"])
    callbacks = instantiate_callbacks(cfg.callbacks, progress_bar=cfg.trainer.enable_progress_bar)
    assert callbacks and not any(isinstance(c, ProgressBar) for c in callbacks)
