"""The stage shell scripts: which runs they start, with which overrides (a recording stand-in for python)."""

import os
import subprocess
import sys

from src.utils.settings import REPO_ROOT, setting

RECORDER = """#!{python}
import os, subprocess, sys
if sys.argv[1:2] == ["parse_settings_json.py"]:
    sys.exit(subprocess.call([{python!r}, *sys.argv[1:]]))
with open(os.environ["RECORD"], "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
"""


def run_script(script, tmp_path, *args):
    fake = tmp_path / "python"
    fake.write_text(RECORDER.format(python=sys.executable))
    fake.chmod(0o755)
    record = tmp_path / "calls.txt"
    env = {**os.environ, "PYTHON": str(fake), "RECORD": str(record)}
    out = subprocess.run(["sh", str(REPO_ROOT / script), *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return [line.split() for line in record.read_text().splitlines()]


def test_train_sh_runs_the_recipe_four_runs_with_settings_paths(tmp_path):
    calls = run_script("train.sh", tmp_path, "trainer=ddp", "data.num_workers=2")
    runs = [(c[c.index("-m") + 1], *(a for a in c if a.startswith(("data.fold=", "model.net.encoder_name=")))) for c in calls]
    assert runs == [
        ("src.train", "data.fold=0", "model.net.encoder_name=tu-tf_efficientnet_b5"),
        ("src.train", "data.fold=1", "model.net.encoder_name=tu-tf_efficientnet_b5"),
        ("src.train", "data.fold=0", "model.net.encoder_name=tu-tf_efficientnet_b6"),
        ("src.train", "data.fold=1", "model.net.encoder_name=tu-tf_efficientnet_b6"),
    ]
    for call in calls:
        assert f"paths.data_dir={setting('RAW_DATA_DIR')}" in call and f"paths.log_dir={setting('LOGS_DIR')}" in call
        assert call[-2:] == ["trainer=ddp", "data.num_workers=2"]


def test_train_pseudo_v2_sh_runs_folds_0_and_1(tmp_path):
    calls = run_script("train_pseudo_v2.sh", tmp_path, "trainer=ddp")
    assert [(c[c.index("-m") + 1], c[c.index("-m") + 2], c[c.index("-m") + 3]) for c in calls] == [
        ("src.train", "recipe=pseudo_v2", "data.fold=0"),
        ("src.train", "recipe=pseudo_v2", "data.fold=1"),
    ]
    assert all(c[-1] == "trainer=ddp" and f"paths.data_dir={setting('RAW_DATA_DIR')}" in c for c in calls)


def test_train_pseudo_sh_runs_one_and_three_channels(tmp_path):
    calls = run_script("train_pseudo.sh", tmp_path)
    assert [(c[c.index("-m") + 2], c[c.index("-m") + 3]) for c in calls] == [
        ("recipe=pseudo", "data.in_channels=1"),
        ("recipe=pseudo", "data.in_channels=3"),
    ]


def test_train_pseudo_3d_sh_runs_folds_0_and_1(tmp_path):
    calls = run_script("train_pseudo_3d.sh", tmp_path, "trainer=gpu")
    assert [(c[c.index("-m") + 2], c[c.index("-m") + 3]) for c in calls] == [
        ("recipe=pseudo_3d", "data.fold=0"),
        ("recipe=pseudo_3d", "data.fold=1"),
    ]
    assert all(c[-1] == "trainer=gpu" for c in calls)
