"""Write ``notebooks/kaggle_inference.ipynb``, the offline Kaggle inference notebook (no outputs).

    python notebooks/build_notebook.py            # (re)write the notebook
    python notebooks/build_notebook.py --check    # exit 1 if the committed notebook differs

The notebook is generated so that its code is reviewed here, as plain Python, and so that the
``.ipynb`` is reproducible byte for byte (fixed cell ids, no outputs, no execution counts).
Every path it uses comes from an environment variable with a Kaggle default (see PARAMETERS).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).resolve().with_name("kaggle_inference.ipynb")

INTRO = """\
# SenNet + HOA vessel segmentation: 4th-place recipe, offline inference

Writes `submission.csv` for the competition's hidden test kidneys with this project's
`python -m src.predict`: the 2.5-D UNet++ models (`MODELS_DIR/2d/*.ckpt`, three views, flip TTA,
roi 800) blended with the 3-D DynUNet models (`MODELS_DIR/3d/*.ckpt`, d4 TTA, roi 256) as submitted
(`blend.mode=roi`). Without 3-D checkpoints it predicts with the 2-D models alone. It uses every GPU of
the session (`engine.devices=auto`: both T4s of `GPU T4 x2`); `PREDICT_OVERRIDES="estimate=true"` prints
the estimated time of the test set instead of predicting.

Attach (Add data) the competition and the three datasets built by `make kaggle-datasets`:
`sennet-vessels-code` (this project's source), `sennet-vessels-wheels` (the packages Kaggle's image
lacks) and `sennet-vessels-models` (`2d/` and `3d/` checkpoints). Internet stays off.

Every path is an environment variable with a Kaggle default (next cell); a dataset attached
elsewhere under `/kaggle/input` is found by its content. Extra Hydra overrides for `src.predict`
go in `PREDICT_OVERRIDES`, e.g. `tta=d4 engine.roi_size=512`.
"""

PARAMETERS = '''\
# Parameters: each one can be overridden by an environment variable of the same name.
import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("DATA_DIR", "/kaggle/input/blood-vessel-segmentation"))  # competition data
CODE_DIR = Path(os.environ.get("CODE_DIR", "/kaggle/input/sennet-vessels-code"))        # this project's source
WHEELS_DIR = Path(os.environ.get("WHEELS_DIR", "/kaggle/input/sennet-vessels-wheels"))  # wheels + requirements-kaggle.txt
MODELS_DIR = Path(os.environ.get("MODELS_DIR", "/kaggle/input/sennet-vessels-models"))  # 2d/*.ckpt and 3d/*.ckpt
OUTPUT = Path(os.environ.get("OUTPUT", "/kaggle/working/submission.csv"))
WORK_DIR = Path(os.environ.get("WORK_DIR", "/tmp/sennet-run"))  # run folder, volume caches, probabilities: outside
# /kaggle/working (20 GB of saved output), on the larger scratch disk
SKIP_INSTALL = os.environ.get("SKIP_INSTALL", "0").strip().lower() in ("1", "true", "yes")
PREDICT_OVERRIDES = os.environ.get("PREDICT_OVERRIDES", "")  # extra Hydra overrides, space-separated
KEEP_CACHE = os.environ.get("KEEP_CACHE", "0").strip().lower() in ("1", "true", "yes")  # keep WORK_DIR/cache

# the submitted recipe (PREDICT_OVERRIDES come after these, so they win)
RECIPE = ["tta=flip", "engine.roi_size=800", "tta_3d=d4", "engine_3d.roi_size=256", "blend.mode=roi"]
'''

LOCATE = '''\
# Find the attached datasets (a dataset may be mounted under another name or folder of /kaggle/input),
# and prepare the environment of this kernel and of the prediction process.
import sys

KAGGLE_INPUT = Path("/kaggle/input")


def locate(name: str, path: Path, marker: str) -> Path:
    """``path`` if it holds ``marker`` or the variable was set, else the first folder of /kaggle/input that holds it."""
    if (path / marker).exists() or name in os.environ or not KAGGLE_INPUT.is_dir():
        return path
    for pattern in ("*", "*/*", "*/*/*"):
        for found in sorted(KAGGLE_INPUT.glob(pattern)):
            if (found / marker).exists():
                print(f"{name}: {path} not found, using {found}")
                return found
    return path


CODE_DIR = locate("CODE_DIR", CODE_DIR, "src/predict.py")
WHEELS_DIR = locate("WHEELS_DIR", WHEELS_DIR, "requirements-kaggle.txt")
MODELS_DIR = locate("MODELS_DIR", MODELS_DIR, "2d")
DATA_DIR = locate("DATA_DIR", DATA_DIR, "sample_submission.csv")

if not (CODE_DIR / "src" / "predict.py").is_file():
    raise FileNotFoundError(f"CODE_DIR={CODE_DIR} holds no src/predict.py: attach the code dataset or set CODE_DIR")
if not (DATA_DIR / "test").is_dir():
    raise FileNotFoundError(f"DATA_DIR={DATA_DIR} holds no test/ folder: attach the competition data or set DATA_DIR")

# The code runs from its (read-only) dataset folder through PYTHONPATH: nothing is written beside it.
os.environ["PYTHONPATH"] = os.pathsep.join([str(CODE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"  # no network in competition notebooks
os.environ.setdefault("PYTHONUNBUFFERED", "1")
if str(CODE_DIR) not in sys.path:
    sys.path.insert(0, str(CODE_DIR))
WORK_DIR.mkdir(parents=True, exist_ok=True)
OUTPUT.parent.mkdir(parents=True, exist_ok=True)
for key in ("DATA_DIR", "CODE_DIR", "WHEELS_DIR", "MODELS_DIR", "OUTPUT", "WORK_DIR", "SKIP_INSTALL", "PREDICT_OVERRIDES"):
    print(f"{key:18} {globals()[key]}")
'''

INSTALL = '''\
# Install the packages Kaggle's image lacks from the wheels dataset (offline; skipped with SKIP_INSTALL=1).
import subprocess

if SKIP_INSTALL:
    print("SKIP_INSTALL=1: using the packages already installed")
else:
    if not WHEELS_DIR.is_dir():
        raise FileNotFoundError(f"WHEELS_DIR={WHEELS_DIR} not found: attach the wheels dataset, "
                                "set WHEELS_DIR, or set SKIP_INSTALL=1")
    requirements = WHEELS_DIR / "requirements-kaggle.txt"
    packages = ["-r", str(requirements)] if requirements.is_file() else sorted(str(p) for p in WHEELS_DIR.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(WHEELS_DIR),
               "--disable-pip-version-check", "--quiet", *packages]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    # the prediction process imports these: fail here, naming the package, rather than later
    check = ("import hydra, omegaconf, monai, segmentation_models_pytorch, timm, tifffile, torch, src.predict\\n"
             "from importlib.metadata import version\\n"
             "names = ['torch', 'hydra-core', 'monai', 'segmentation-models-pytorch', 'timm', 'albumentations']\\n"
             "print('packages:', ', '.join(f'{n} {version(n)}' for n in names))")
    subprocess.run([sys.executable, "-c", check], check=True, cwd=WORK_DIR)
'''

PREDICT = '''\
# List the checkpoints and run `python -m src.predict` (2-D + 3-D blend as submitted), streaming its output.
import codecs
import shlex


def hydra_value(value) -> str:
    """A Hydra override value, quoted: paths may hold '=', ',', spaces or brackets."""
    text = str(value)
    if "\\\\" in text or "${" in text:
        raise ValueError(f"{text}: a path with a backslash or '${{' cannot be passed to Hydra; rename it")
    return "'" + text.replace("'", "\\\\'") + "'"


def hydra_list(paths) -> str:
    return "[" + ",".join(hydra_value(p) for p in paths) + "]"


checkpoints_2d = sorted(MODELS_DIR.glob("2d/*.ckpt"))
checkpoints_3d = sorted(MODELS_DIR.glob("3d/*.ckpt"))
for kind, found in (("2-D", checkpoints_2d), ("3-D", checkpoints_3d)):
    print(f"{kind} checkpoints: {len(found)}")
    for path in found:
        print(f"  {path} ({path.stat().st_size / 2**20:.1f} MiB)")
if not checkpoints_2d:
    raise FileNotFoundError(f"no 2-D checkpoint: expected {MODELS_DIR}/2d/*.ckpt "
                            "(attach the models dataset built by `make kaggle-datasets`, or set MODELS_DIR)")
if not checkpoints_3d:
    print(f"no 3-D checkpoint in {MODELS_DIR}/3d: predicting with the 2-D models alone")

argv = [
    sys.executable, "-m", "src.predict",
    f"checkpoints={hydra_list(checkpoints_2d)}",
    f"checkpoints_3d={hydra_list(checkpoints_3d)}",
    *RECIPE,
    f"paths.data_dir={hydra_value(DATA_DIR)}",
    f"paths.log_dir={hydra_value(WORK_DIR / 'logs')}",
    f"paths.cache_dir={hydra_value(WORK_DIR / 'cache')}",
    f"output={hydra_value(OUTPUT)}",
    f"hydra.run.dir={hydra_value(WORK_DIR / 'predict')}",
    *shlex.split(PREDICT_OVERRIDES),
]
print("$ python -m src.predict", *argv[3:], sep="\\n    ", flush=True)
# the kernel forces colour, which makes the progress bars redraw many times a second into the log:
# without it each bar is printed once, when its step ends
env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE")}
process = subprocess.Popen(argv, cwd=WORK_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
for chunk in iter(lambda: process.stdout.read1(65536), b""):
    sys.stdout.write(decoder.decode(chunk))
    sys.stdout.flush()
sys.stdout.write(decoder.decode(b"", final=True))
if process.wait() != 0:
    raise RuntimeError(f"src.predict failed with exit code {process.returncode} (its output is above)")
'''

SHOW = '''\
# The submission: first rows, row count, ids against sample_submission.csv.
import shutil

import pandas as pd

if "estimate=true" in PREDICT_OVERRIDES.split():
    raise SystemExit("estimate=true: the estimate is above; no submission was written (remove it from PREDICT_OVERRIDES)")
submission = pd.read_csv(OUTPUT, keep_default_na=False)
sample = pd.read_csv(DATA_DIR / "sample_submission.csv")
print(f"{OUTPUT}: {len(submission)} rows, {int((submission.rle != '1 0').sum())} slices with vessels")
if list(submission.id) != list(sample.id):
    raise RuntimeError("the submission's ids differ from sample_submission.csv")
if not KEEP_CACHE:
    shutil.rmtree(WORK_DIR / "cache", ignore_errors=True)  # volume caches: large, not an output
submission.head(10)
'''


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    cells = [new_markdown_cell(INTRO), new_code_cell(PARAMETERS), new_code_cell(LOCATE), new_code_cell(INSTALL),
             new_code_cell(PREDICT), new_code_cell(SHOW)]
    cells[1].metadata["tags"] = ["parameters"]  # papermill's convention
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i}"
    nb.cells = cells
    nbformat.validate(nb)
    return nb


def render() -> str:
    return nbformat.writes(build(), version=4) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=NOTEBOOK, help=f"notebook to write (default {NOTEBOOK.name})")
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 if the notebook is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python notebooks/build_notebook.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
