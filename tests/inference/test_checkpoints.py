
import pytest
import torch

from src.inference.checkpoints import find_checkpoint, load_member
from src.utils.errors import UserError
from tests.inference.helpers import write_checkpoint


@pytest.mark.parametrize("channels", [1, 3])
def test_network_is_rebuilt_from_the_checkpoint(tmp_path, channels):
    path, net = write_checkpoint(tmp_path / "m.ckpt", channels)
    member = load_member(path, weight=1.5, tta="flip")
    assert member.in_channels == channels and member.weight == 1.5 and member.tta == "flip"
    x = torch.rand(2, channels, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(member.net(x), net(x))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_member(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_member(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(UserError, match="no network config"):
        load_member(tmp_path / "foreign.ckpt")


def test_find_checkpoint_takes_the_best_dice_across_reruns(tmp_path):
    run = tmp_path / "train" / "runs" / "UnetPlusPlus_x_size_3_512_bs32_hard"
    for folder, names in {"0": ["epoch_003_dice_0.7000.ckpt", "last.ckpt"], "0_v2": ["epoch_010_dice_0.8100.ckpt"],
                          "1": ["epoch_001_dice_0.9000.ckpt"], "10": ["epoch_001_dice_0.9900.ckpt"]}.items():
        (run / folder / "checkpoints").mkdir(parents=True)
        for name in names:
            (run / folder / "checkpoints" / name).write_bytes(b"")
    assert find_checkpoint(tmp_path, run.name, 0).name == "epoch_010_dice_0.8100.ckpt"
    assert find_checkpoint(tmp_path, run.name, 1).name == "epoch_001_dice_0.9000.ckpt"  # not fold 10's
    only_last = tmp_path / "train" / "runs" / "r" / "2" / "checkpoints"
    only_last.mkdir(parents=True)
    (only_last / "last.ckpt").write_bytes(b"")
    assert find_checkpoint(tmp_path, "r", 2).name == "last.ckpt"
    with pytest.raises(UserError, match=r"no checkpoint of run missing_run fold 0 \(looked in .*missing_run/0/checkpoints\)"):
        find_checkpoint(tmp_path, "missing_run", 0)
