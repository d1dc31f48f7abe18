"""Stage-1 training: configs compose, a tiny run trains, resumes, DDP (2 CPU processes) validates identically."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from src.train import train
from src.utils.entry import compose_config
from src.utils.errors import UserError
from src.utils.settings import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
TINY = [
    "experiment=demo",
    "data.img_size=64",
    "data.batch_size=4",
    "model.val_window.sw_batch_size=32",
    "extras.print_config=false",
    "~callbacks.rich_progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def compose_cfg(overrides, output_dir=None):
    cfg = compose_config("train", overrides, output_dir)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.log_dir = str(output_dir)
    return cfg


def test_default_config_carries_the_recipe():
    cfg = compose_cfg([])
    assert cfg.model.net.arch == "UnetPlusPlus" and cfg.model.net.encoder_name == "tu-tf_efficientnet_b5"
    assert cfg.model.net.encoder_weights == "imagenet"
    assert cfg.model.optimizer._target_ == "torch.optim.RAdam" and cfg.model.optimizer.lr == 3e-4
    assert cfg.model.scheduler.T_max == 17000 and cfg.model.scheduler.eta_min == 1e-6
    data = cfg.data
    assert (data.img_size, data.batch_size, data.in_channels, data.train_mutliplier, data.aug) == (512, 32, 3, 2, "hard")
    assert cfg.trainer.max_epochs == 30 and cfg.trainer.gradient_clip_val == 12
    assert dict(cfg.model.val_window) == {"roi_size": 512, "sw_batch_size": 8, "overlap": 0.25, "mode": "gaussian",
                                          "padding_mode": "reflect"}
    assert list(cfg.model.sd_thresholds) == [0.05, 0.1, 0.2, 0.3, 0.4, 0.5]
    cb = cfg.callbacks.model_checkpoint
    assert (cb.monitor, cb.save_top_k, cb.save_last, cb.filename) == ("val/dice", 3, True, "epoch_{epoch:03d}_dice_{val/dice:.4f}")
    assert cfg.run_name == "UnetPlusPlus_tu-tf_efficientnet_b5_size_3_512_bs32_hard"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    assert cfg.data._target_ and cfg.model._target_ and cfg.trainer._target_


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_sim", "mps"])
def test_every_trainer_composes(trainer):
    cfg = compose_cfg([f"trainer={trainer}"])
    assert cfg.trainer.use_distributed_sampler is False
    if trainer == "ddp":
        assert cfg.trainer.devices == 2 and cfg.trainer.strategy == "ddp" and cfg.trainer.precision == "16-mixed"


def test_default_trainer_picks_precision_by_accelerator():
    import torch

    from src.utils.precision import cpu_precision

    cfg = compose_cfg([])
    assert cfg.trainer.precision == ("16-mixed" if torch.cuda.is_available() else cpu_precision())


def test_fast_dev_run_on_tiny_phantom(tiny_phantom, tmp_path):
    cfg = compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "trainer.fast_dev_run=true", "logger=csv"], tmp_path)
    metrics = train(cfg)
    for key in ("train/loss_step", "val/loss", "val/dice", *(f"val/sd@{t:g}" for t in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5))):
        assert key in metrics, key
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "metrics.json").exists()


def test_resume_from_checkpoint(tiny_phantom, tmp_path):
    # the recipe's way (epochs; the demo's trainer.max_steps is off): Lightning 2.x does not continue a
    # run resumed from an epoch-end checkpoint when max_steps is set (README, Troubleshooting)
    first = compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "trainer.max_steps=-1", "trainer.max_epochs=1",
                         "trainer.limit_train_batches=2",
                         "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0", "logger=csv"], tmp_path / "a")
    train(first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert last.exists()
    assert len(list((tmp_path / "a" / "checkpoints").glob("epoch_000_dice_*.ckpt"))) == 1
    second = compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "trainer.max_steps=-1", "trainer.max_epochs=2",
                          "trainer.limit_train_batches=2",
                          "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0", "logger=csv", f"ckpt_path={last}"],
                         tmp_path / "b")
    train(second)
    import torch

    state = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and state["global_step"] == 4
    assert state["hyper_parameters"]["net"]["encoder_name"] == "resnet18"  # the network is rebuildable


def test_a_run_stopped_inside_an_epoch_by_max_steps_validates_its_last_weights(tiny_phantom, tmp_path):
    """Epochs of 2 steps, max_steps 3: the run ends one step into its second epoch. Without
    ``ValidateAtMaxSteps`` that epoch's checkpoint carried the first epoch's score and validation
    (a tie with it, which ``best_of`` resolved to the unvalidated newer file)."""
    import torch

    cfg = compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "trainer.max_steps=3", "trainer.max_epochs=5",
                       "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0",
                       "logger=csv"], tmp_path)
    train(cfg)
    saved = sorted((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    assert [p.name[:9] for p in saved] == ["epoch_000", "epoch_001"]
    for path in [*saved, tmp_path / "checkpoints" / "last.ckpt"]:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        assert ckpt["validation"]["step"] == ckpt["global_step"], path.name  # its own weights were validated
    assert ckpt["global_step"] == 3
    import pandas as pd

    validated = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val/dice"])
    assert sorted(validated["step"].astype(int)) == [1, 2]  # after steps 2 and 3 (logged as global_step - 1)


def test_a_diverged_run_stops_with_a_clear_error(tiny_phantom, tmp_path):
    """A learning rate of 1e30 blows every weight up in the first step (then NaN): the default callbacks stop the run
    (three NaN losses or gradients in a row) with a one-line error instead of training on to a finished-looking run.
    (Also: ``trainer.enable_progress_bar=false`` alone is accepted, the progress bar callback left out.)"""
    cfg = compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "model.optimizer.lr=1e30", "trainer.max_steps=8",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=8", "trainer.limit_val_batches=1",
                       "trainer.num_sanity_val_steps=0", "logger=csv", "trainer.enable_progress_bar=false"], tmp_path)
    with pytest.raises(UserError, match="weights diverged"):
        train(cfg)


def test_the_run_s_best_checkpoint_follows_the_checkpoint_monitor(tiny_phantom, tmp_path):
    """With ``callbacks.model_checkpoint.monitor=val/loss`` (mode min) the best file predict and the demo take is
    the one with the lowest validation loss, whatever the Dice in the file names says."""
    import pandas as pd

    from src.inference.checkpoints import best_checkpoint_in

    cfg = compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "trainer.max_steps=3", "trainer.max_epochs=3",
                       "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
                       "logger=csv", "callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=min",
                       "callbacks.model_checkpoint.save_top_k=3"], tmp_path)
    train(cfg)
    validated = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val/loss"]).reset_index(drop=True)
    assert len(validated) == 3
    best_epoch = int(validated["val/loss"].idxmin())
    assert best_checkpoint_in(tmp_path / "checkpoints").name.startswith(f"epoch_{best_epoch:03d}_")


def test_clear_errors_in_process(tiny_phantom, tmp_path):
    with pytest.raises(UserError, match="must be odd"):
        train(compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "data.in_channels=4"], tmp_path / "a"))
    with pytest.raises(UserError, match="fold 3 is not defined"):
        train(compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "data.fold=3"], tmp_path / "b"))


def checkout_env():
    """Subprocesses import this checkout's ``src``, whichever checkout ``make install`` registered last."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}


def run_cli(*overrides, cwd):
    env = checkout_env()
    return subprocess.run([sys.executable, "-m", "src.train", *TINY, *overrides], capture_output=True, text=True, cwd=cwd, env=env)


def test_cli_bad_data_dir_is_one_line_exit_2(tmp_path):
    out = run_cli(f"paths.data_dir={tmp_path / 'missing'}", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is not a folder" in errors[0]
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_ddp_sim_validation_equals_single_process(tiny_phantom, tmp_path):
    """2 CPU processes (gloo) validate contiguous halves of the volume; the surface Dice is the same. Both in
    float32 (``ddp_sim`` is 32-true; ``cpu`` would take bf16-mixed on a CPU with bfloat16)."""
    common = [f"paths.data_dir={tiny_phantom}", f"paths.log_dir={tmp_path}", "train=false", "logger=csv",
              "model.val_window.sw_batch_size=4", "seed=7", "trainer.precision=32-true"]
    results = {}
    for trainer in ("cpu", "ddp_sim"):
        out = run_cli(*common, f"trainer={trainer}", f"task_name={trainer}", cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        (metrics,) = list((tmp_path / trainer).rglob("metrics.json"))
        results[trainer] = json.loads(metrics.read_text())["metrics"]
    single, ddp = results["cpu"], results["ddp_sim"]
    for key in (k for k in single if k.startswith("val/sd@")):
        assert ddp[key] == single[key], key
    assert ddp["val/dice"] == pytest.approx(single["val/dice"], abs=1e-6)


def test_two_runs_started_at_once_get_different_folders(tmp_path):
    code = "import sys; from src.utils.resolvers import claim_run_dir; print(claim_run_dir(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "runs" / "name" / "0")], stdout=subprocess.PIPE, text=True,
                              env=checkout_env())
             for _ in range(4)]
    dirs = [p.communicate()[0].strip() for p in procs]
    assert len(set(dirs)) == 4 and all(Path(d).is_dir() for d in dirs)
    assert str(tmp_path / "runs" / "name" / "0") in dirs


def test_stage2_configs_carry_the_recipe():
    v2 = compose_cfg(["recipe=pseudo_v2"])
    assert (v2.data.sampling, v2.data.cutmix_p, v2.model.net.decoder_attention_type) == ("organ_weighted", 0.5, "scse")
    assert (v2.model.scheduler.T_max, v2.trainer.max_epochs, v2.data.fold, v2.task_name) == (68000, 60, 0, "train_pseudo_v2")
    assert v2.data.external is True and compose_cfg([]).data.external is False  # HOA trains in stage 2 only
    assert v2.model.net.encoder_name == "tu-tf_efficientnet_b5" and v2.data.batch_size == 32 and v2.data.img_size == 512
    best = compose_cfg(["recipe=pseudo"])
    assert (best.data.fold, best.model.scheduler.T_max, best.task_name) == (-1, 34000, "train_pseudo")


def test_stage2_fast_dev_run_on_tiny_phantom(tiny_phantom, tmp_path):
    cfg = compose_cfg([*TINY, f"paths.data_dir={tiny_phantom}", "trainer.fast_dev_run=true", "logger=csv",
                       "model.net.decoder_channels=[64,32,16,16,16]", "recipe=pseudo_v2"], tmp_path)  # scSE needs >= 16
    assert cfg.data.sampling == "organ_weighted" and cfg.model.net.decoder_attention_type == "scse"
    assert "val/sd@0.5" in train(cfg)


def test_stage2_3d_config_and_fast_dev_run(tiny_phantom, tmp_path):
    recipe = compose_cfg(["recipe=pseudo_3d"])
    net = recipe.model.net
    assert (net.spatial_dims, net.in_channels, net.out_channels, net.dropout) == (3, 1, 1, 0.1)
    assert list(map(list, net.kernel_size)) == [[3, 3, 3]] * 6 and list(map(list, net.strides)) == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert list(map(list, net.upsample_kernel_size)) == [[2, 2, 2]] * 5
    opt = recipe.model.optimizer
    assert (opt._target_, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ("torch.optim.SGD", 1e-2, 0.99, True, 3e-5)
    assert (recipe.model.scheduler.T_max, recipe.trainer.max_epochs) == (125000, 500)
    data = recipe.data
    assert (data.img_size, data.batch_size, data.samples_per_epoch, data.val_samples_per_epoch) == (192, 4, 2000, 200)
    assert recipe.data.vessel_p == 0.5 and recipe.run_name == "DynUNet_size_192_bs4"
    cfg = compose_cfg(["experiment=demo3d", f"paths.data_dir={tiny_phantom}", "trainer.fast_dev_run=true", "extras.print_config=false",
                       "~callbacks.rich_progress_bar", "~callbacks.model_summary", "trainer.enable_progress_bar=false",
                       "trainer.enable_model_summary=false", "recipe=pseudo_3d"], tmp_path)
    assert (cfg.trainer.max_epochs, cfg.model.scheduler.T_max) == (21, 420)  # experiment values come after the stage's
    steps = cfg.trainer.max_epochs * cfg.data.samples_per_epoch // cfg.data.batch_size
    assert cfg.model.scheduler.T_max == steps  # the cosine ends where the run does
    metrics = train(cfg)
    assert {"val/loss", "val/dice", "val/sd@0.5"} <= set(metrics)


def test_3d_checkpoint_is_refused_by_the_2d_engine(tmp_path):
    from src.inference.checkpoints import load_member

    torch_save = __import__("torch").save
    torch_save({"hyper_parameters": {"net": {"spatial_dims": 3}, "net_kind": "dynunet"}, "state_dict": {}}, tmp_path / "3d.ckpt")
    with pytest.raises(UserError, match="a 3-D DynUNet checkpoint"):
        load_member(tmp_path / "3d.ckpt")
