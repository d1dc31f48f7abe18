import numpy as np
import pytest
import torch

from src.utils import precision
from src.utils.entry import compose_config
from src.utils.precision import auto_precision, autocast_dtype, cpu_precision


def compose_cfg(overrides):
    return compose_config("train", overrides)


@pytest.fixture(params=[True, False], ids=["cpu-bf16", "cpu-fp32"])
def native_bf16(request, monkeypatch):
    """Run a test as on a CPU with bfloat16 instructions and as on one without."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_cpu_precision_follows_the_cpu(native_bf16):
    assert cpu_precision() == ("bf16-mixed" if native_bf16 else "32-true")
    if not torch.cuda.is_available():
        assert auto_precision() == cpu_precision()


def test_autocast_dtype_per_device(native_bf16):
    assert autocast_dtype("cpu") == (torch.bfloat16 if native_bf16 else None)
    assert autocast_dtype("cpu", amp=False) is None
    assert autocast_dtype("cuda") == torch.float16
    assert autocast_dtype("cuda", amp=False) is None
    assert autocast_dtype("mps") is None


def test_the_probe_answers_a_bool():
    assert isinstance(precision.cpu_has_native_bf16(), bool)


def test_trainer_configs_resolve_the_cpu_precision(native_bf16):
    assert compose_cfg(["trainer=cpu"]).trainer.precision == cpu_precision()
    if not torch.cuda.is_available():
        assert compose_cfg([]).trainer.precision == cpu_precision()
    assert compose_cfg(["trainer=gpu"]).trainer.precision == "16-mixed"


def test_engine_runs_the_network_in_the_autocast_dtype(native_bf16, tiny_phantom):
    """The 2-D and 3-D engines run a convolution under bfloat16 where the CPU has it (its output then
    differs from float32 by bfloat16 rounding, not more), and in float32 with ``amp=False``."""
    from src.data.volumes import VolumeStore
    from src.inference.checkpoints import Member
    from src.inference.engine import InferenceEngine
    from src.inference.engine3d import Engine3D

    seen = []

    class Probe(torch.nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            y = self.conv(x)
            seen.append(y.dtype)
            return y

    volume = VolumeStore(progress=False).open(tiny_phantom / "test" / "kidney_5" / "images")
    torch.manual_seed(0)
    conv2, conv3 = torch.nn.Conv2d(3, 1, 3, padding=1), torch.nn.Conv3d(1, 1, 3, padding=1)
    results = {}
    for amp in (True, False):
        seen.clear()
        p2 = InferenceEngine([Member(Probe(conv2), 3)], roi_size=32, views=("z",), progress=False, amp=amp).predict(volume)
        p3 = Engine3D([Member(Probe(conv3), 1)], roi_size=32, progress=False, amp=amp).predict(volume)
        expected = torch.bfloat16 if native_bf16 and amp else torch.float32
        assert set(seen) == {expected}
        results[amp] = (np.asarray(p2, np.float32), np.asarray(p3, np.float32))
    for reduced, full in zip(results[True], results[False]):
        np.testing.assert_allclose(reduced, full, atol=0.02)


def test_demo_configs_train_in_the_cpu_precision(native_bf16):
    """Both demos take the CPU's bfloat16 (their steps are sized for it). The 3-D demo pinned float32 until its
    NaN weights were traced to PyTorch's CPU bf16 conv3d gradients, which the default callbacks now skip
    (README, Stage 2c)."""
    assert compose_cfg(["experiment=demo"]).trainer.precision == cpu_precision()
    cfg = compose_cfg(["recipe=pseudo_3d", "experiment=demo3d"])
    assert cfg.trainer.precision == cpu_precision()
    assert "skip_non_finite_gradients" in cfg.callbacks
