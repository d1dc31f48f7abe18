import pytest
import torch

from src.inference.tta import TTA_VIEWS, apply_view, undo_view, with_tta
from src.utils.errors import UserError


@pytest.mark.parametrize("ndim, mode", [(n, m) for n in TTA_VIEWS for m in TTA_VIEWS[n]])
def test_every_view_is_undone(ndim, mode):
    shape = (2, 1, 4, 5, 6) if ndim == 3 else (2, 1, 4, 6)
    x = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
    for view in TTA_VIEWS[ndim][mode]:
        torch.testing.assert_close(undo_view(apply_view(x, view), view), x, rtol=0, atol=0)
    identity = with_tta(lambda t: t * 2, x, mode, ndim)
    torch.testing.assert_close(identity, 2 * x)


def test_the_views_are_distinct_and_their_count_is_the_recipes():
    def distinct(ndim, views):
        x = torch.arange(2.0 * 16).reshape((1, 1, 2, 4, 4) if ndim == 3 else (1, 2, 4, 4))
        return len({tuple(apply_view(x, v).flatten().tolist()) for v in views})

    assert [distinct(2, TTA_VIEWS[2][m]) for m in ("none", "flip", "d4")] == [1, 3, 8]
    assert [distinct(3, TTA_VIEWS[3][m]) for m in ("none", "flip", "d4")] == [1, 4, 8]


def test_batched_and_one_at_a_time_agree_on_a_shape_dependent_model():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.rand(2, 1, 8, 12)  # not square: d4's quarter turns form a second group
    with torch.no_grad():
        torch.testing.assert_close(with_tta(net, x, "d4", batched=True), with_tta(net, x, "d4", batched=False))


def test_a_3d_flip_of_a_volume_model_is_the_mean_of_the_flipped_predictions():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.rand(1, 1, 5, 6, 7)
    with torch.no_grad():
        expected = sum(torch.flip(net(torch.flip(x, d)), d) if d else net(x) for d in ((), (-3,), (-2,), (-1,))) / 4
        torch.testing.assert_close(with_tta(net, x, "flip", ndim=3, batched=False), expected)


def test_an_unknown_mode_names_the_choices():
    with pytest.raises(UserError, match="choose one of none, flip, d4"):
        with_tta(lambda t: t, torch.zeros(1, 1, 4, 4), "d8")
