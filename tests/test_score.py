import contextlib
import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from src.metrics.rle import rle_encode
from src.metrics.surface_dice import surface_dice
from src.score import main, score_submission
from src.utils.errors import UserError
from src.utils.settings import REPO_ROOT


def volume(seed, shape):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.3, 0.7, 3) * np.array(shape)
    return ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) < (min(shape) / 3) ** 2


def solution_rows(name, vol):
    return [
        {"id": f"{name}_{i:04d}", "rle": rle_encode(s), "width": vol.shape[2], "height": vol.shape[1], "image_id": name, "slice_id": i}
        for i, s in enumerate(vol)
    ]


@pytest.fixture
def kidneys():
    return {"kidney_5": volume(0, (9, 14, 11)), "kidney_6": volume(1, (7, 10, 13))}


@pytest.fixture
def files(tmp_path, kidneys):
    solution = pd.DataFrame([r for k, v in kidneys.items() for r in solution_rows(k, v)])
    solution_csv = tmp_path / "solution.csv"
    solution.to_csv(solution_csv, index=False)
    return tmp_path, solution_csv, solution


def write_submission(path, masks):
    rows = [{"id": f"{k}_{i:04d}", "rle": rle_encode(s)} for k, v in masks.items() for i, s in enumerate(v)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run(*args):
    """Run the scorer's CLI in-process (the stack import costs seconds per subprocess)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_cli_subprocess_exit_codes(files, kidneys, tmp_path):
    _, solution_csv, _ = files
    sub = write_submission(tmp_path / "ok.csv", kidneys)
    ok = subprocess.run([sys.executable, "-m", "src.score", str(sub), str(solution_csv)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1] == "score 1.000000"
    bad = subprocess.run([sys.executable, "-m", "src.score", str(tmp_path / "missing.csv"), str(solution_csv)],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_perfect_and_empty_submissions(files, kidneys):
    tmp, solution_csv, _ = files
    perfect = run(write_submission(tmp / "perfect.csv", kidneys), solution_csv)
    assert perfect.returncode == 0, perfect.stderr
    lines = perfect.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["kidney_5", "kidney_6", "score"]
    assert float(lines[-1].split()[1]) == 1.0
    empty = run(write_submission(tmp / "empty.csv", {k: np.zeros_like(v) for k, v in kidneys.items()}), solution_csv)
    assert empty.returncode == 0 and float(empty.stdout.strip().splitlines()[-1].split()[1]) == 0.0


def test_per_kidney_scores_equal_the_volume_metric(files, kidneys):
    tmp, _, solution = files
    preds = {k: np.roll(v, 1, axis=2) for k, v in kidneys.items()}
    sub = pd.read_csv(write_submission(tmp / "sub.csv", preds), keep_default_na=False)
    # slice order comes from slice_id, not from the row order of the solution
    scores = score_submission(sub, solution.sample(frac=1, random_state=0), chunk=4)
    for k in kidneys:
        assert scores[k] == pytest.approx(surface_dice(preds[k], kidneys[k]), abs=1e-12)


def one_line_error(out, fragment):
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert fragment in out.stderr


def test_missing_id_is_one_line_error(files, kidneys):
    tmp, solution_csv, _ = files
    sub = write_submission(tmp / "sub.csv", kidneys)
    pd.read_csv(sub).iloc[:-1].to_csv(sub, index=False)
    one_line_error(run(sub, solution_csv), "lacks 1 id(s)")


def test_malformed_rle_is_one_line_error(files, kidneys):
    tmp, solution_csv, _ = files
    sub = write_submission(tmp / "sub.csv", kidneys)
    df = pd.read_csv(sub)
    df.loc[3, "rle"] = "1 2 3"
    df.to_csv(sub, index=False)
    one_line_error(run(sub, solution_csv), "kidney_5_0003")


def test_rle_that_does_not_fit_the_shape_is_one_line_error(files, kidneys):
    tmp, solution_csv, _ = files
    sub = write_submission(tmp / "sub.csv", kidneys)
    df = pd.read_csv(sub)
    df.loc[2, "rle"] = "150 10"  # kidney_5 slices are 14x11 = 154 pixels
    df.to_csv(sub, index=False)
    one_line_error(run(sub, solution_csv), "past the end of a 14x11 mask")


def test_missing_columns_and_files(files, tmp_path):
    _, solution_csv, _ = files
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prediction\nkidney_5_0000,1 0\n")
    one_line_error(run(bad, solution_csv), "lacks column(s) rle")
    one_line_error(run(tmp_path / "nope.csv", solution_csv), "not found")


def test_empty_rle_string_is_an_error(files, kidneys):
    tmp, _, solution = files
    sub = pd.read_csv(write_submission(tmp / "sub.csv", kidneys), keep_default_na=False)
    sub.loc[0, "rle"] = ""
    with pytest.raises(UserError, match="empty RLE"):
        score_submission(sub, solution)
