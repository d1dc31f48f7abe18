
import pytest
import torch

from src.inference.checkpoints import checkpoint_threshold, find_checkpoint, load_member, threshold_of, validated_threshold
from src.inference.predictor import resolve_threshold
from src.models.module_2d import check_predict_threshold
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


def _lightning_state(folder, best: str, monitor: str = "val/loss", mode: str = "min", score: float = 0.1) -> dict:
    """The callback state Lightning's ModelCheckpoint writes into every checkpoint (its own state key)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    key = ModelCheckpoint(dirpath=folder, monitor=monitor, mode=mode).state_key
    return {key: {"monitor": monitor, "best_model_score": torch.tensor(score), "best_model_path": str(folder / best),
                  "best_k_models": {}, "dirpath": str(folder)}}


def test_the_best_checkpoint_is_the_one_its_monitor_chose_not_the_dice_in_its_name(tmp_path):
    """A run trained with ``callbacks.model_checkpoint.monitor=val/loss`` keeps the top files by loss; their
    names still carry val/dice. The pick follows what ModelCheckpoint recorded (and its mode), not the names."""
    import os

    from src.inference.checkpoints import best_checkpoint_in

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("epoch_001_dice_0.6000.ckpt", "epoch_002_dice_0.5000.ckpt"):
        torch.save({"callbacks": {}}, folder / name)
    torch.save({"callbacks": _lightning_state(folder, "epoch_002_dice_0.5000.ckpt")}, folder / "last.ckpt")
    os.utime(folder / "last.ckpt", (2e9, 2e9))  # the newest: written after the run's last validation
    assert best_checkpoint_in(folder).name == "epoch_002_dice_0.5000.ckpt"
    # the recorded best was deleted or moved: the names decide again
    (folder / "epoch_002_dice_0.5000.ckpt").unlink()
    assert best_checkpoint_in(folder).name == "epoch_001_dice_0.6000.ckpt"


def test_reruns_are_compared_by_their_monitor_and_mode(tmp_path):
    run = tmp_path / "train" / "runs" / "r"
    for folder, best, score in (("0", "epoch_001_dice_0.9000.ckpt", 0.30), ("0_v1", "epoch_004_dice_0.7000.ckpt", 0.20)):
        checkpoints = run / folder / "checkpoints"
        checkpoints.mkdir(parents=True)
        torch.save({"callbacks": {}}, checkpoints / best)
        torch.save({"callbacks": _lightning_state(checkpoints, best, score=score)}, checkpoints / "last.ckpt")
    assert find_checkpoint(tmp_path, "r", 0).name == "epoch_004_dice_0.7000.ckpt"  # the lower val/loss (mode min)


VALIDATION = {"val/loss": 0.3, "val/dice": 0.4, "val/sd@0.05": 0.01, "val/sd@0.1": 0.05, "val/sd@0.3": 0.31,
              "val/sd@0.4": 0.33, "val/sd@0.5": 0.03, "epoch": 7, "step": 200}


def test_a_checkpoint_says_its_threshold(tmp_path):
    """The recipe's number, or the val/sd@<th> threshold that scored best at the checkpoint's validation."""
    assert threshold_of({"hyper_parameters": {}}) == (0.5, "its training config")  # written before the setting
    assert threshold_of({"hyper_parameters": {"predict_threshold": 0.35}})[0] == 0.35
    validated = {"hyper_parameters": {"predict_threshold": "validated"}, "validation": VALIDATION}
    threshold, source = threshold_of(validated)
    assert threshold == 0.4 and "0.3300" in source and "epoch 7" in source and "0.0300 at 0.5" in source
    tie = {**VALIDATION, "val/sd@0.3": 0.2, "val/sd@0.4": 0.2, "val/sd@0.5": 0.2}
    assert threshold_of({"hyper_parameters": {"predict_threshold": "validated"}, "validation": tie})[0] == 0.5
    none_recorded = threshold_of({"hyper_parameters": {"predict_threshold": "validated"}}, "x/last.ckpt")
    assert none_recorded[0] == 0.5 and "no validation recorded in last.ckpt" in none_recorded[1]
    path, _ = write_checkpoint(tmp_path / "m.ckpt", hparams={"predict_threshold": "validated"}, validation=VALIDATION)
    assert checkpoint_threshold(path)[0] == 0.4
    member = load_member(path, weight=2.0)
    assert member.threshold == 0.4 and member.threshold_source.startswith("validated")


def test_validated_leaves_the_recipes_threshold_only_for_a_clear_gain():
    """Within the margin of the best, the threshold nearest 0.5 wins; a collapsed 0.5 is left for what works."""
    demo = {0.3: 0.30, 0.4: 0.3534, 0.5: 0.3488}  # the demo's checkpoint: 0.4 is 1.3 % better on validation
    assert validated_threshold(demo) == 0.5 and validated_threshold(demo, margin=0.0) == 0.4
    collapsed = {0.3: 0.3199, 0.35: 0.3434, 0.4: 0.3444, 0.45: 0.3015, 0.5: 0.0, 0.55: 0.0}  # robustness seed 1
    assert validated_threshold(collapsed) == 0.4
    assert validated_threshold({0.45: 0.338, 0.5: 0.3445, 0.55: 0.3446}) == 0.5  # seed 0: 0.55 by 0.0001
    assert validated_threshold({0.4: 0.0, 0.5: 0.0, 0.6: 0.0}) == 0.5
    assert validated_threshold({0.3: 0.2, 0.7: 0.2}) == 0.3  # equally near 0.5 and equal: the lower
    ckpt = {"hyper_parameters": {"predict_threshold": "validated"}, "validation": {f"val/sd@{t}": v for t, v in demo.items()}}
    assert threshold_of(ckpt) == (0.5, "validated: val/sd 0.3488 at epoch None, within 0.05 of the best 0.3534 at 0.4")
    ckpt["hyper_parameters"]["predict_threshold_margin"] = 0.0
    assert threshold_of(ckpt)[0] == 0.4


def test_threshold_checkpoint_averages_the_members_with_their_weights(tmp_path):
    a = load_member(write_checkpoint(tmp_path / "a.ckpt", hparams={"predict_threshold": 0.3})[0], weight=3.0)
    b = load_member(write_checkpoint(tmp_path / "b.ckpt")[0], weight=1.0)  # no setting: 0.5
    assert resolve_threshold("checkpoint", [a, b]) == pytest.approx((3 * 0.3 + 0.5) / 4)
    assert resolve_threshold(0.7, [a, b]) == 0.7 and resolve_threshold("0.25", [a]) == 0.25
    assert resolve_threshold("checkpoint", []) == 0.5
    with pytest.raises(UserError, match="threshold must be a probability or 'checkpoint', got 'best'"):
        resolve_threshold("best", [a])


@pytest.mark.parametrize("value", ["median", 1.0, 0, "nan"])
def test_predict_threshold_setting_errors(value):
    with pytest.raises(UserError, match="model.predict_threshold must"):
        check_predict_threshold(value)
    assert check_predict_threshold(" Validated ") == "validated" and check_predict_threshold("0.4") == 0.4
