import pytest
import torch
import torch.nn.functional as F

from src.models.losses import BoundaryDoUBCELoss, BoundaryDoULoss, boundary_voxels
from src.utils.settings import REPO_ROOT


def reference_boundary_dou(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """The paper's formulation written plainly: a per-sample convolution with the cross kernel."""
    spatial = logits.ndim - 2
    conv = F.conv2d if spatial == 2 else F.conv3d
    kernel = torch.zeros((3,) * spatial)
    centre = (1,) * spatial
    kernel[centre] = 1
    for axis in range(spatial):
        for offset in (0, 2):
            index = list(centre)
            index[axis] = offset
            kernel[tuple(index)] = 1
    full = kernel.sum()
    score = torch.sigmoid(logits.double())
    losses = []
    for c in range(logits.shape[1]):
        t = target[:, c].double()
        y = torch.zeros_like(t)
        for i in range(t.shape[0]):
            y[i] = conv(t[i][None, None], kernel.double()[None, None], padding=1)[0, 0]
        y = y * t
        y[y == full] = 0
        contour = torch.count_nonzero(y)
        size = torch.count_nonzero(t)
        alpha = 1 - (contour + smooth) / (size + smooth)
        alpha = min(2 * alpha - 1, torch.tensor(0.8, dtype=torch.float64))
        s = score[:, c]
        inter, y_sum, z_sum = (s * t).sum(), (t * t).sum(), (s * s).sum()
        losses.append((z_sum + y_sum - 2 * inter + smooth) / (z_sum + y_sum - (1 + alpha) * inter + smooth))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("shape", [(3, 1, 17, 23), (2, 2, 9, 8), (2, 1, 7, 9, 6), (1, 2, 5, 6, 7)])
def test_matches_per_sample_reference(shape):
    g = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(shape, generator=g) * 3
    target = (torch.rand(shape, generator=g) > 0.6).float()
    got = BoundaryDoULoss()(logits, target)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference_boundary_dou(logits, target).item(), rel=1e-5)


def test_boundary_counts_face_neighbours_only():
    t = torch.zeros(1, 1, 5, 5)
    t[0, 0, 1:4, 1:4] = 1  # a 3x3 square: only its centre is interior
    b = boundary_voxels(t)
    assert b.sum() == 8 and not b[0, 0, 2, 2]
    cube = torch.ones(1, 1, 3, 3, 3)  # touching the image border counts as touching background
    assert boundary_voxels(cube).sum() == 26


def test_perfect_prediction_has_low_loss_and_gradients_flow():
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 5:9] = 1
    good = (target * 2 - 1) * 20
    assert BoundaryDoULoss()(good, target) < 1e-3
    logits = torch.zeros_like(target, requires_grad=True)
    BoundaryDoULoss()(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_empty_target_is_finite():
    loss = BoundaryDoULoss()(torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    assert torch.isfinite(loss)


def test_safe_under_autocast():
    logits = torch.randn(2, 1, 16, 16, dtype=torch.bfloat16)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BoundaryDoULoss()(logits, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        BoundaryDoULoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


@pytest.mark.parametrize("shape", [(3, 1, 17, 23), (2, 1, 7, 9, 6)])
def test_dou_bce_is_dou_plus_weighted_cross_entropy(shape):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(shape, generator=g) * 3
    target = (torch.rand(shape, generator=g) > 0.7).float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dou = reference_boundary_dou(logits, target)
    assert BoundaryDoUBCELoss(bce_weight=0.5)(logits, target).item() == pytest.approx((dou + 0.5 * bce).item(), rel=1e-5)
    assert BoundaryDoUBCELoss(bce_weight=0.0)(logits, target).item() == pytest.approx(dou.item(), rel=1e-5)
    with pytest.raises(ValueError, match="bce_weight"):
        BoundaryDoUBCELoss(bce_weight=-1)


def test_dou_bce_adds_a_per_voxel_pull_towards_the_labels():
    """From logits that are 0 everywhere (p = 0.5), the cross-entropy term adds (p - t) / N to each
    voxel's gradient: every background logit is pushed down harder than by Boundary DoU alone."""
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 10:12, :] = 1  # a thin vessel: ~6 % foreground
    grads = {}
    for name, loss in (("dou", BoundaryDoULoss()), ("dou_bce", BoundaryDoUBCELoss())):
        logits = torch.zeros_like(target, requires_grad=True)
        loss(logits, target).backward()
        grads[name] = logits.grad
    background = target == 0
    assert (grads["dou_bce"][background] > 0).all()  # descent lowers every background logit
    n = target.numel()
    assert torch.allclose(grads["dou_bce"] - grads["dou"], (0.5 - target) / n, atol=1e-7)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO_ROOT / "configs" / "model" / "loss").glob("*.yaml")))
def test_every_loss_config_builds_a_loss_that_ranks_a_good_prediction_first(name):
    """configs/model/loss/*.yaml: each instantiates to a loss of (logits, target), 2-D and 3-D."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    loss = instantiate(OmegaConf.load(REPO_ROOT / "configs" / "model" / "loss" / f"{name}.yaml"))
    for shape in [(2, 1, 16, 16), (2, 1, 8, 8, 8)]:
        target = torch.zeros(shape)
        target[..., 2:6, 3:7] = 1
        good, bad = (target * 2 - 1) * 8, (1 - target * 2) * 8
        assert float(loss(good, target)) < float(loss(torch.zeros(shape), target)) < float(loss(bad, target))
