import torch

from src.metrics.surface_dice import SurfaceDiceAccumulator
from src.models.base import ValidationTotals


def test_totals_give_the_pooled_dice_loss_and_surface_dice():
    pred = torch.zeros(2, 1, 8, 8)
    pred[:, :, 2:6, 2:6] = 1
    truth = torch.zeros(2, 1, 8, 8)
    truth[:, :, 2:6, 2:5] = 1
    totals = ValidationTotals([0.5])
    totals.add(pred[:1] > 0.5, truth[:1], torch.tensor(0.2), 1)
    totals.add(pred[1:] > 0.5, truth[1:], torch.tensor(0.4), 1)
    acc = SurfaceDiceAccumulator()
    acc.update(pred[:, 0] > 0.5, truth[:, 0] > 0.5)
    acc.close()
    totals.add_surface(0, acc.hist)
    values = totals.values()
    assert abs(values["val/loss"] - 0.3) < 1e-7  # float32 losses, float64 sums
    assert abs(values["val/dice"] - 2 * 24 / (32 + 24)) < 1e-12
    assert abs(values["val/sd@0.5"] - acc.score()) < 1e-12 and 0 < values["val/sd@0.5"] < 1


def test_a_reduction_sums_the_totals_of_every_process():
    totals = ValidationTotals([0.1, 0.5])
    totals.add(torch.ones(1, 1, 4, 4) > 0, torch.ones(1, 1, 4, 4), torch.tensor(1.0), 1)
    doubled = totals.values(lambda t: 2 * t)
    assert doubled["val/loss"] == totals.values()["val/loss"] == 1.0 and doubled["val/dice"] == 1.0


def test_nothing_predicted_and_nothing_true_scores_zero_not_nan():
    values = ValidationTotals([0.5]).values()
    assert values == {"val/loss": 0.0, "val/dice": 0.0, "val/sd@0.5": 0.0}
