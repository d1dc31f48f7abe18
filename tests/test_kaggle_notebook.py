"""The Kaggle inference notebook, executed headless against the phantom, and the builder of its datasets.

The notebook runs as on Kaggle but with SKIP_INSTALL=1 and every path pointed at temporary folders:
the code and the models come from the datasets built by scripts/build_kaggle_datasets.py (so the
code dataset is checked to hold what inference needs), and the paths contain '=', ',' and spaces,
which Hydra overrides must quote.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from src.metrics.rle import rle_decode
from src.utils.settings import REPO_ROOT
from tests.inference.helpers import write_checkpoint, write_checkpoint_3d

NOTEBOOK = REPO_ROOT / "notebooks" / "kaggle_inference.ipynb"
BUILDER = REPO_ROOT / "scripts" / "build_kaggle_datasets.py"
SMALL = ("engine.roi_size=64 engine.sw_batch_size=16 engine.views=[z] tta=none engine_3d.roi_size=64 tta_3d=none "
         "engine.device=cpu progress=false")  # PREDICT_OVERRIDES: small and fast, after the recipe's settings


def load_builder():
    spec = importlib.util.spec_from_file_location("build_kaggle_datasets", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders as training leaves them: a 2-D run with two scored checkpoints, a 3-D checkpoint."""
    root = tmp_path_factory.mktemp("logs")
    run_2d = root / "unet=b5,scse" / "0"
    write_checkpoint(run_2d / "checkpoints" / "epoch_001_dice_0.5000.ckpt", 3, seed=1)
    write_checkpoint(run_2d / "checkpoints" / "epoch_002_dice_0.7000.ckpt", 3, seed=2)  # the best
    write_checkpoint_3d(root / "dynunet" / "0" / "checkpoints" / "last.ckpt")
    return root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, runs):
    """code/ and models/ from the builder (no wheels: they need the package index), in a folder that needs quoting."""
    out = tmp_path_factory.mktemp("dist") / "kaggle=1,2 x"
    builder = load_builder()
    os.environ["KAGGLE_USERNAME"] = "tester"
    try:
        builder.main(["--out", str(out), "--skip-wheels", "--models-2d", str(runs / "unet=b5,scse" / "[0-9]"),
                      "--models-3d", str(runs / "dynunet" / "*" / "checkpoints" / "*.ckpt")])
    finally:
        del os.environ["KAGGLE_USERNAME"]
    return out


def test_builder_writes_code_and_models_with_metadata(datasets):
    assert not (datasets / "wheels").exists()
    for kind in ("code", "models"):
        meta = json.loads((datasets / kind / "dataset-metadata.json").read_text())
        assert meta["id"] == f"tester/sennet-vessels-{kind}"
        assert 6 <= len(meta["title"]) <= 50 and meta["licenses"] and meta["licenses"][0]["name"]
    code = datasets / "code"
    for needed in ("src/predict.py", "src/metrics/rle.py", "configs/predict.yaml", "configs/paths/default.yaml",
                   "SETTINGS.json", "parse_settings_json.py", "pyproject.toml", "requirements.txt", "requirements-kaggle.txt"):
        assert (code / needed).is_file(), needed
    names = {p.relative_to(code).as_posix() for p in code.rglob("*")}
    top = {n.split("/")[0] for n in names}
    assert top <= {"src", "configs", "SETTINGS.json", "parse_settings_json.py", "pyproject.toml", "dataset-metadata.json"} | {
        n for n in top if n.startswith("requirements") and n.endswith(".txt")}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or ".cache" in n.split("/")]
    assert not [n for n in names if n.endswith((".tif", ".npy", ".ckpt", ".log", ".csv"))]  # no data, logs, models
    assert sorted(p.name for p in (datasets / "models" / "2d").iterdir()) == ["epoch_002_dice_0.7000.ckpt"]  # best of the run
    assert sorted(p.name for p in (datasets / "models" / "3d").iterdir()) == ["last.ckpt"]


def test_builder_errors_are_one_line(tmp_path, runs, capsys):
    out = subprocess.run([sys.executable, str(BUILDER), "--out", str(tmp_path / "out"), "--skip-wheels",
                          "--models-2d", str(tmp_path / "nothing" / "*.ckpt"), "--models-3d"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"error: --models-2d '{tmp_path / 'nothing' / '*.ckpt'}' matches nothing"
    assert not (tmp_path / "out" / "code").exists()  # a bad glob fails before anything is written
    builder = load_builder()
    with pytest.raises(SystemExit) as exit_info:
        builder.main(["--out", str(tmp_path / "out"), "--skip-wheels", "--models-2d", str(runs / "dynunet" / "0"), "--models-3d"])
    assert exit_info.value.code == 2
    assert "a 3-D DynUNet checkpoint given to --models-2d" in capsys.readouterr().err
    assert not list((tmp_path / "out").iterdir())  # checkpoints are checked before anything is written


def test_builder_pip_failure_is_one_line(tmp_path):
    """A requirement pip rejects (no network needed to fail) stops the build with pip's reason; no wheels/ is left."""
    (tmp_path / "bad.txt").write_text("hydra-core =!= 1\n")
    out = subprocess.run([sys.executable, str(BUILDER), "--out", str(tmp_path / "out"), "--skip-models",
                          "--requirements", str(tmp_path / "bad.txt")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: pip could not download hydra-core =!= 1 for manylinux2014_x86_64 Python 3.11")
    assert "Invalid requirement" in out.stderr
    assert not (tmp_path / "out" / "wheels").exists() and not list((tmp_path / "out").glob(".*partial"))


def test_notebook_is_generated_and_has_no_outputs():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "notebooks" / "build_notebook.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def run_notebook(env: dict, monkeypatch, cwd: Path) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def text_of(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") or "".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow
def test_notebook_predicts_the_phantom_offline(tmp_path, tiny_phantom, datasets, monkeypatch):
    code = datasets / "code"
    code_files = sorted(p.relative_to(code).as_posix() for p in code.rglob("*"))
    output = tmp_path / "out=1,2" / "submission.csv"
    work = tmp_path / "work dir"
    nb = run_notebook({"SKIP_INSTALL": "1", "CODE_DIR": code, "DATA_DIR": tiny_phantom, "MODELS_DIR": datasets / "models",
                       "WHEELS_DIR": tmp_path / "no-wheels", "OUTPUT": output, "WORK_DIR": work,
                       "PREDICT_OVERRIDES": SMALL}, monkeypatch, tmp_path)
    sub = pd.read_csv(output, keep_default_na=False)
    sample = pd.read_csv(tiny_phantom / "sample_submission.csv")
    assert list(sub.columns) == ["id", "rle"] and list(sub.id) == list(sample.id)
    solution = pd.read_csv(tiny_phantom / "solution.csv", keep_default_na=False).set_index("id")
    for row in sub.itertuples():
        rle_decode(row.rle, (solution.loc[row.id, "height"], solution.loc[row.id, "width"]), name=row.id)
    text = text_of(nb)
    assert "2-D checkpoints: 1" in text and "3-D checkpoints: 1" in text and f"{len(sample)} rows" in text
    # the prediction ran from the code dataset with the recipe, then the overrides, and wrote nothing beside the code
    overrides = (work / "predict" / ".hydra" / "overrides.yaml").read_text()
    for expected in ("tta=flip", "tta_3d=d4", "blend.mode=roi", "engine.roi_size=800", "engine_3d.roi_size=256", "engine.roi_size=64"):
        assert expected in overrides, expected
    assert overrides.index("engine.roi_size=800") < overrides.index("engine.roi_size=64")
    assert str(code / "configs") in (work / "predict" / ".hydra" / "hydra.yaml").read_text()
    assert sorted(p.relative_to(code).as_posix() for p in code.rglob("*")) == code_files
    assert not (work / "predict" / "probabilities").exists() and not (work / "cache").exists()


@pytest.mark.slow
def test_notebook_without_2d_checkpoints_says_so(tmp_path, tiny_phantom, datasets, monkeypatch):
    (tmp_path / "models" / "2d").mkdir(parents=True)
    with pytest.raises(CellExecutionError, match="no 2-D checkpoint: expected .*/2d/\\*.ckpt"):
        run_notebook({"SKIP_INSTALL": "1", "CODE_DIR": datasets / "code", "DATA_DIR": tiny_phantom,
                      "MODELS_DIR": tmp_path / "models", "OUTPUT": tmp_path / "submission.csv", "WORK_DIR": tmp_path / "work",
                      "PREDICT_OVERRIDES": ""}, monkeypatch, tmp_path)
    assert not (tmp_path / "submission.csv").exists()
