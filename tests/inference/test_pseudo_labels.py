import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from src.data.volumes import VolumeStore
from src.inference.checkpoints import Member
from src.inference.engine import InferenceEngine
from src.inference.predictor import KidneyPredictor
from src.utils.settings import REPO_ROOT
from tests.inference.helpers import CentreLogit, write_checkpoint

HOA = "train_ext/50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_"


@pytest.fixture
def data(tmp_path, tiny_phantom):
    d = tmp_path / "raw"
    shutil.copytree(tiny_phantom / HOA / "images", d / HOA / "images")
    return d


def engine(**kw):
    return InferenceEngine([Member(CentreLogit(), 3, name="centre")], roi_size=32, sw_batch_size=16, progress=False, **kw)


def pseudo_label(engine, volume, labels):
    """The pseudo labels the way generate_pseudo.py writes them: through the predictor."""
    return KidneyPredictor.for_labels(engine, labels).pseudo_labels(volume, "hoa", labels)


def read_labels(folder):
    return np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))])


def test_labels_are_rounded_probabilities(data):
    volume = VolumeStore(progress=False).open(data / HOA / "images")
    labels = data / HOA / "labels"
    assert pseudo_label(engine(), volume, labels) == len(volume)
    expected = 1 / (1 + np.exp(-(volume.normalise(volume.data) - 0.5) * 10))
    got = read_labels(labels)
    assert got.dtype == np.uint8 and got.shape == volume.shape
    assert np.abs(got.astype(float) - expected * 255).max() <= 1.0
    assert not (labels.parent / ".pseudo-work").exists() and not list(labels.glob(".*"))


def test_labels_record_their_models_and_refuse_to_mix_with_other_models(data):
    """The record beside the labels names the models; labels of other models (or of none recorded) are not
    resumed into: a one-line error, or rewritten when asked (replace_other / overwrite)."""
    from src.data.registry import labels_source_path
    from src.utils.errors import UserError

    volume = VolumeStore(progress=False).open(data / HOA / "images")
    labels = data / HOA / "labels"
    pseudo_label(engine(), volume, labels)
    record = json.loads(labels_source_path(labels).read_text())
    assert record["members"][0]["checkpoint"] == "centre" and record["shape"] == list(volume.shape)
    other = InferenceEngine([Member(CentreLogit(), 3, name="other")], roi_size=32, sw_batch_size=16, progress=False)
    (labels / "0003.png").unlink()
    says = r"holds \d+ labels that these models did not write \(checkpoints centre\); pass --overwrite"
    with pytest.raises(UserError, match=says) as err:
        KidneyPredictor.for_labels(other, labels).pseudo_labels(volume, "hoa", labels)
    assert "\n" not in str(err.value) and not (labels / "0003.png").exists()  # nothing written
    before = {p.name: p.stat().st_mtime_ns for p in labels.glob("*.png")}
    assert KidneyPredictor.for_labels(other, labels).pseudo_labels(volume, "hoa", labels, replace_other=True) == len(volume)
    assert all(p.stat().st_mtime_ns != before.get(p.name) for p in labels.glob("*.png"))  # every label rewritten
    assert json.loads(labels_source_path(labels).read_text())["members"][0]["checkpoint"] == "other"
    # its own labels are resumed under replace_other, not rewritten
    assert KidneyPredictor.for_labels(other, labels).pseudo_labels(volume, "hoa", labels, replace_other=True) == 0
    # labels without a record (by hand, or by an older version) are another source too
    labels_source_path(labels).unlink()
    with pytest.raises(UserError, match="no record of the models that wrote them"):
        KidneyPredictor.for_labels(other, labels).pseudo_labels(volume, "hoa", labels)
    assert KidneyPredictor.for_labels(other, labels).pseudo_labels(volume, "hoa", labels, overwrite=True) == len(volume)


def test_a_checkpoint_is_recorded_by_its_file(tmp_path):
    """A checkpoint file is recorded by resolved path, size and modification time: a retrained file is another source."""
    from src.inference.pseudo_labels import labels_source

    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"weights")
    volume = type("V", (), {"shape": (4, 5, 6)})()
    eng = InferenceEngine([Member(CentreLogit(), 3, name=str(ckpt))], roi_size=32, progress=False)
    first = labels_source(eng, volume)
    assert first["members"][0]["checkpoint"] == {"path": str(ckpt.resolve()), "bytes": 7, "mtime_ns": ckpt.stat().st_mtime_ns}
    assert labels_source(eng, volume) == first
    ckpt.write_bytes(b"other weights")
    assert labels_source(eng, volume) != first


def test_a_rerun_writes_only_missing_labels(data):
    volume = VolumeStore(progress=False).open(data / HOA / "images")
    labels = data / HOA / "labels"
    pseudo_label(engine(), volume, labels)
    for name in ("0003.png", "0010.png"):
        (labels / name).unlink()
    before = {p.name: p.stat().st_mtime_ns for p in labels.glob("*.png")}
    assert pseudo_label(engine(), volume, labels) == 2
    after = {p.name: p.stat().st_mtime_ns for p in labels.glob("*.png")}
    assert {n for n in after if after[n] != before.get(n)} == {"0003.png", "0010.png"}
    assert pseudo_label(engine(), volume, labels) == 0


def test_an_interrupted_prediction_resumes_where_it_stopped(data):
    volume = VolumeStore(progress=False).open(data / HOA / "images")
    labels = data / HOA / "labels"

    class Flaky(CentreLogit):
        calls = 0

        def forward(self, x):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise KeyboardInterrupt
            return super().forward(x)

    flaky = InferenceEngine([Member(Flaky(), 3, name="centre")], roi_size=32, sw_batch_size=16, slices_per_batch=4, block_bytes=1,
                            progress=False)
    with pytest.raises(KeyboardInterrupt):
        pseudo_label(flaky, volume, labels)
    work = labels.parent / ".pseudo-work"
    done = int((work / "z.next").read_text())
    assert done > 0 and done % 4 == 0  # whole slabs of 4 slices were kept
    resumed = InferenceEngine([Member(CentreLogit(), 3, name="centre")], roi_size=32, sw_batch_size=16, slices_per_batch=4, block_bytes=1,
                              progress=False)
    counted = []
    logits = resumed._logits
    resumed._logits = lambda rep, stacks: (counted.append(next(iter(stacks.values())).shape[0]), logits(rep, stacks))[1]
    assert pseudo_label(resumed, volume, labels) == len(volume)
    assert 0 < sum(counted) <= sum(volume.shape) - done  # the finished z slices were not predicted again
    expected = 1 / (1 + np.exp(-(volume.normalise(volume.data) - 0.5) * 10))
    assert np.abs(read_labels(labels).astype(float) - expected * 255).max() <= 1.0


def test_generate_pseudo_cli(data, tmp_path):
    ckpt, _ = write_checkpoint(tmp_path / "logs" / "train" / "runs" / "my_run" / "0" / "checkpoints" / "epoch_001_dice_0.5000.ckpt")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    base = [sys.executable, str(REPO_ROOT / "generate_pseudo.py"), "--dataset_folder", str(data),
            "--logs_base_path", str(tmp_path / "logs"), "--tta", "none", "--roi", "32", "--quiet"]
    out = subprocess.run([*base, "--runs", "my_run", "--folds", "0"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(list((data / HOA / "labels").glob("*.png"))) == len(list((data / HOA / "images").glob("*.jp2")))
    # another run's checkpoint: its labels are not resumed into but refused, or rewritten with --replace_other
    write_checkpoint(tmp_path / "logs" / "train" / "runs" / "other_run" / "0" / "checkpoints" / "epoch_002_dice_0.6000.ckpt")
    refused = subprocess.run([*base, "--runs", "other_run", "--folds", "0"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "pass --overwrite" in refused.stderr
    replaced = subprocess.run([*base, "--runs", "other_run", "--folds", "0", "--replace_other"], capture_output=True, text=True,
                              env=env, cwd=tmp_path)
    assert replaced.returncode == 0 and "wrote 0 label slices" not in replaced.stdout, replaced.stderr[-2000:]
    missing = subprocess.run([*base, "--runs", "my_run", "--folds", "1"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "no checkpoint of run my_run fold 1 (looked in" in missing.stderr
