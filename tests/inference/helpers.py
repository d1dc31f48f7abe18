"""Small models and checkpoints for inference tests (a helper module, not a test module)."""

from pathlib import Path

import torch

from src.models.module_2d import build_net

TINY_NET = {"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": None, "encoder_depth": 3,
            "decoder_channels": [32, 16, 8], "classes": 1}
TINY_DYNUNET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "kernel_size": [[3, 3, 3]] * 3,
                "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "upsample_kernel_size": [[2, 2, 2]] * 2, "filters": [4, 8, 8]}


class CentreLogit(torch.nn.Module):
    """Pointwise: the logit is 10 * (centre channel - 0.5), so the probability is a known function of the voxel."""

    def forward(self, x):
        c = x.shape[1] // 2
        return (x[:, c : c + 1] - 0.5) * 10


class Constant(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full_like(x[:, :1], self.value)


def write_checkpoint(path: Path, in_channels: int = 3, seed: int = 0, hparams: dict | None = None,
                     validation: dict | None = None) -> tuple[Path, torch.nn.Module]:
    """A checkpoint as Lightning writes it for SegmentationModule2D (network config + ``net.`` weights),
    with extra ``hparams`` (e.g. ``predict_threshold``) and a recorded ``validation`` when given."""
    torch.manual_seed(seed)
    cfg = {**TINY_NET, "in_channels": in_channels}
    net = build_net(cfg).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"hyper_parameters": {"net": cfg, **(hparams or {})}, "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}
    if validation is not None:
        ckpt["validation"] = validation
    torch.save(ckpt, path)
    return path, net


def write_checkpoint_3d(path: Path, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A tiny DynUNet checkpoint as the 3-D Lightning module writes it (network config, ``net_kind``, ``net.`` weights)."""
    from monai.networks.nets import DynUNet

    torch.manual_seed(seed)
    net = DynUNet(**TINY_DYNUNET).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": {"net": TINY_DYNUNET, "net_kind": "dynunet"},
                "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    return path, net
