"""Build the three Kaggle datasets of notebooks/kaggle_inference.ipynb (``make kaggle-datasets``).

    python scripts/build_kaggle_datasets.py [--out dist/kaggle] [--models-2d GLOB ...] [--models-3d GLOB ...]
                                            [--skip-wheels] [--skip-models] [--username NAME]

writes, each with a ``dataset-metadata.json`` for ``kaggle datasets create -p DIR --dir-mode zip``:

* ``code/``    the source needed at inference (src/, configs/, SETTINGS.json, parse_settings_json.py,
               pyproject.toml, requirements*.txt); no data, logs or caches
* ``wheels/``  one wheel (no dependencies) of each line of requirements-kaggle.txt for Kaggle's
               platform and Python (``pip download --only-binary=:all:``; a project with no wheel,
               like antlr4-python3-runtime 4.9.3, is built here with ``pip wheel`` and must be pure
               Python), plus requirements-kaggle.txt, which the notebook installs offline
* ``models/``  the checkpoints matched by ``--models-2d`` in ``2d/`` and by ``--models-3d`` in ``3d/``;
               a glob that matches a run folder takes its best checkpoint (highest Dice in the name)

Dataset ids are ``<username>/sennet-vessels-{code,wheels,models}``, the username from ``--username``
or ``KAGGLE_USERNAME`` (else a placeholder to edit). Each folder is written under a temporary name
and swapped in when complete. Errors are one line (exit status 2).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from src.utils.errors import UserError, cli_main  # noqa: E402
from src.utils.files import atomic_output  # noqa: E402

PLACEHOLDER_USER = "INSERT_KAGGLE_USERNAME"
SLUG_PREFIX = "sennet-vessels"
CODE_ITEMS = ("src", "configs", "SETTINGS.json", "parse_settings_json.py", "pyproject.toml")
CODE_IGNORE = ("__pycache__", "*.pyc", ".cache", "*.tmp-*", "*.egg-info", ".ipynb_checkpoints", ".pytest_cache", ".DS_Store")
LOCAL_CONFIG = REPO / "configs" / "local" / "default.yaml"  # personal, git-ignored
TITLES = {"code": "SenNet vessels code", "wheels": "SenNet vessels wheels", "models": "SenNet vessels models"}


def metadata(username: str, kind: str, license_name: str) -> dict:
    return {"title": TITLES[kind], "id": f"{username}/{SLUG_PREFIX}-{kind}", "licenses": [{"name": license_name}]}


@contextmanager
def staged(out: Path, name: str) -> Iterator[Path]:
    """``out/<name>`` built in a temporary folder and swapped in (replacing our previous build) when the
    block succeeds."""
    with atomic_output(out / name, on_existing=shutil.rmtree) as tmp:
        tmp.mkdir()
        yield tmp


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------- code


def build_code(dest: Path, repo: Path = REPO) -> None:
    ignore_patterns = shutil.ignore_patterns(*CODE_IGNORE)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(ignore_patterns(folder, names))
        return skipped | {n for n in names if Path(folder, n) == LOCAL_CONFIG}

    items = [*CODE_ITEMS, *sorted(p.name for p in repo.glob("requirements*.txt"))]
    for item in items:
        src = repo / item
        if not src.exists():
            raise UserError(f"{src}: missing from the project, cannot build the code dataset")
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=ignore)
        else:
            shutil.copy2(src, dest / item)


# ---------------------------------------------------------------- wheels


def read_requirements(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: requirements file not found")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    reqs = [line for line in lines if line]
    if not reqs:
        raise UserError(f"{path}: no requirement in it")
    return reqs


def _pip(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True)
    except OSError as err:
        raise UserError(f"cannot run pip ({err})") from None


def _last_error(result: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or [f"exit status {result.returncode}"])[-1]


def build_wheels(dest: Path, requirements: Path, platforms: list[str], python_versions: list[str], implementation: str) -> None:
    reqs = read_requirements(requirements)
    target = ["--implementation", implementation, *[a for p in platforms for a in ("--platform", p)]]
    for req in reqs:
        for version in python_versions:
            before = set(dest.glob("*.whl"))
            got = _pip(["download", "--only-binary=:all:", "--no-deps", "--dest", str(dest), "--python-version", version, *target, req])
            if got.returncode == 0:
                new = sorted(set(dest.glob("*.whl")) - before)
                print(f"  {req}: {', '.join(w.name for w in new) or 'already downloaded'}", flush=True)
                if new and all(w.name.endswith("-none-any.whl") for w in new):
                    break  # pure Python: the same wheel serves every Python version
                continue
            # no wheel for the target: build one here, which is only right for a pure-Python project
            with tempfile.TemporaryDirectory() as tmp:
                built = _pip(["wheel", "--no-deps", "--wheel-dir", tmp, req])
                if built.returncode != 0:
                    raise UserError(f"pip could not download {req} for {'/'.join(platforms)} Python {version} "
                                    f"({_last_error(got)}) nor build it ({_last_error(built)})")
                wheels = sorted(Path(tmp).glob("*.whl"))
                foreign = [w.name for w in wheels if not w.name.endswith("-none-any.whl")]
                if not wheels or foreign:
                    raise UserError(f"{req} has no wheel for {'/'.join(platforms)} Python {version} and builds a "
                                    f"platform-specific one here ({', '.join(foreign) or 'none'}); pin a version with wheels")
                for w in wheels:
                    shutil.move(str(w), dest / w.name)
                print(f"  {req}: built {', '.join(w.name for w in wheels)} (pure Python)", flush=True)
            break  # a pure-Python wheel serves every Python version
    shutil.copy2(requirements, dest / "requirements-kaggle.txt")


# ---------------------------------------------------------------- models


def select_checkpoints(patterns: list[str], option: str, hint: str = "") -> list[Path]:
    """The checkpoints matched by each glob (a run folder gives its best checkpoint); a glob matching nothing is an error."""
    chosen: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            raise UserError(f"{option} {pattern!r} matches nothing{hint}")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                from src.inference.checkpoints import best_checkpoint_in

                folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
                path = best_checkpoint_in(folder)
            elif path.suffix != ".ckpt":
                raise UserError(f"{option} {pattern!r} matches {path}, which is not a .ckpt file or run folder")
            if path.resolve() not in {c.resolve() for c in chosen}:
                chosen.append(path)
    return chosen


def check_checkpoint(path: Path, kind: str) -> None:
    """A 2-D checkpoint must not be a DynUNet one, a 3-D one must be (read without loading the tensors)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise UserError(f"{path}: checkpoint has no network config (hyper_parameters.net); was it written by this project?")
    is_3d = hparams.get("net_kind") == "dynunet"
    if kind == "3d" and not is_3d:
        raise UserError(f"{path}: a 2-D checkpoint given to --models-3d")
    if kind == "2d" and is_3d:
        raise UserError(f"{path}: a 3-D DynUNet checkpoint given to --models-2d")


def unique_names(paths: list[Path]) -> list[str]:
    """File names in the dataset: the checkpoint's own name, prefixed by its run folders when names repeat."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    names = ["__".join([*[x for x in p.parts[:-1] if x != "checkpoints"][-2:], p.name]) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{i:02d}__{name}" for i, name in enumerate(names)]


def build_models(dest: Path, models_2d: list[Path], models_3d: list[Path]) -> None:
    for kind, paths in (("2d", models_2d), ("3d", models_3d)):
        (dest / kind).mkdir()
        for path, name in zip(paths, unique_names(paths)):
            shutil.copy2(path, dest / kind / name)
            print(f"  {kind}/{name}  <- {path} ({mib(path.stat().st_size)})", flush=True)


# ---------------------------------------------------------------- main


def default_model_globs() -> tuple[list[str], list[str]]:
    """The submitted recipe's runs: stage-2 2-D (train_pseudo_v2.sh) and 3-D (train_pseudo_3d.sh), every fold."""
    from src.utils.settings import setting

    logs = setting("LOGS_DIR")
    return [str(logs / "train_pseudo_v2" / "runs" / "*" / "[0-9]")], [str(logs / "train_pseudo_3d" / "runs" / "*" / "[0-9]")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "kaggle", help="output folder (default dist/kaggle)")
    parser.add_argument("--models-2d", nargs="*", metavar="GLOB", default=None,
                        help="2-D checkpoints or run folders (default: every fold of the train_pseudo_v2 runs in LOGS_DIR)")
    parser.add_argument("--models-3d", nargs="*", metavar="GLOB", default=None,
                        help="3-D checkpoints or run folders (default: every fold of the train_pseudo_3d runs; "
                             "give the option with no value for none)")
    parser.add_argument("--skip-wheels", action="store_true", help="do not build wheels/ (it needs the package index)")
    parser.add_argument("--skip-models", action="store_true", help="do not build models/")
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements-kaggle.txt",
                        help="packages to ship as wheels (default requirements-kaggle.txt)")
    parser.add_argument("--platform", action="append", default=None,
                        help="wheel platform tag, repeatable (default manylinux2014_x86_64)")
    parser.add_argument("--python-version", action="append", default=None,
                        help="Kaggle's Python, repeatable (default 3.11; check with !python --version on Kaggle)")
    parser.add_argument("--implementation", default="cp", help="Python implementation tag (default cp)")
    parser.add_argument("--username", default=os.environ.get("KAGGLE_USERNAME") or PLACEHOLDER_USER,
                        help="Kaggle user owning the datasets (default $KAGGLE_USERNAME)")
    parser.add_argument("--license", default="other", help="license name in dataset-metadata.json (default other)")
    args = parser.parse_args(argv)
    args.platform = args.platform or ["manylinux2014_x86_64"]
    args.python_version = args.python_version or ["3.11"]
    return args


@cli_main
def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    models_2d = models_3d = []
    if not args.skip_models:  # resolve the globs before any copying: a bad glob fails fast
        default_2d, default_3d = default_model_globs()
        hint_2d = " (the default: pass --models-2d GLOB, or train with train_pseudo_v2.sh)"
        hint_3d = " (the default: pass --models-3d GLOB, or --models-3d alone for none, or train with train_pseudo_3d.sh)"
        models_2d = select_checkpoints(*((args.models_2d, "--models-2d") if args.models_2d is not None
                                         else (default_2d, "--models-2d", hint_2d)))
        models_3d = select_checkpoints(*((args.models_3d, "--models-3d") if args.models_3d is not None
                                         else (default_3d, "--models-3d", hint_3d)))
        if not models_2d:
            raise UserError("--models-2d: at least one 2-D checkpoint is needed (the notebook blends 3-D models into 2-D ones)")
        for kind, paths in (("2d", models_2d), ("3d", models_3d)):
            for path in paths:
                check_checkpoint(path, kind)

    built = []
    with staged(out, "code") as dest:
        build_code(dest)
        write_json(dest / "dataset-metadata.json", metadata(args.username, "code", args.license))
    built.append("code")
    if not args.skip_models:
        print("models:", flush=True)
        with staged(out, "models") as dest:
            build_models(dest, models_2d, models_3d)
            write_json(dest / "dataset-metadata.json", metadata(args.username, "models", args.license))
        built.append("models")
    if not args.skip_wheels:
        print(f"wheels ({', '.join(args.platform)}, {args.implementation} {', '.join(args.python_version)}):", flush=True)
        with staged(out, "wheels") as dest:
            build_wheels(dest, args.requirements, args.platform, args.python_version, args.implementation)
            write_json(dest / "dataset-metadata.json", metadata(args.username, "wheels", args.license))
        built.append("wheels")

    for name in built:
        folder = out / name
        print(f"{folder}: {sum(1 for p in folder.rglob('*') if p.is_file())} files, {mib(size_of(folder))}")
    if args.username == PLACEHOLDER_USER:
        print(f"note: the dataset ids say {PLACEHOLDER_USER}: set KAGGLE_USERNAME (or --username) and rerun, "
              "or edit the dataset-metadata.json files")
    print("upload (first time: create; later: version -m MESSAGE):")
    for name in built:
        print(f"  kaggle datasets create -p {out / name} --dir-mode zip")


if __name__ == "__main__":
    main()
