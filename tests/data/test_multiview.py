import os
import subprocess
import sys

import numpy as np
import pytest

from src.data.multiview import project_split
from src.data.registry import VIEW_AXES
from src.data.volumes import list_slices, read_slice
from src.utils.errors import UserError
from src.utils.settings import REPO_ROOT
from tests.data.mini import make_mini_dataset


def read_folder(folder):
    return np.stack([read_slice(p) for p in list_slices(folder)])


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "raw"
    return d, make_mini_dataset(d)


def test_train_projections_are_the_recipe_transposes(data, monkeypatch):
    d, vols = data
    monkeypatch.setattr("src.data.volumes.READ_RUN_BYTES", 300)  # several z-runs per block
    done = project_split(d, ("train",), block_bytes=200, progress=False)  # tiny blocks: several per view
    assert done == {"kidney_1_dense": ["xz", "zy"], "kidney_3_sparse": ["xz", "zy"], "kidney_3_dense": ["xz", "zy"]}
    for name in ("kidney_1_dense", "kidney_3_sparse", "kidney_3_dense"):
        img, lab = vols[name]
        for view in ("xz", "zy"):
            root = d / "train" / f"{name}_{view}"
            np.testing.assert_array_equal(read_folder(root / "images"), img.transpose(VIEW_AXES[view]))
            np.testing.assert_array_equal(read_folder(root / "labels"), lab.transpose(VIEW_AXES[view]))
            assert list_slices(root / "images")[0].suffix == ".tif"
    assert not list((d / "train").glob("*.tmp-*"))
    assert not (d / "train_ext" / "50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2__xz").exists()


def test_complete_outputs_are_skipped_and_force_rebuilds(data):
    d, _ = data
    project_split(d, ("train",), progress=False)
    marker = d / "train" / "kidney_1_dense_xz" / "images" / "0000.tif"
    mtime = marker.stat().st_mtime_ns
    assert project_split(d, ("train",), progress=False)["kidney_1_dense"] == []
    assert marker.stat().st_mtime_ns == mtime
    assert project_split(d, ("train",), force=True, progress=False)["kidney_1_dense"] == ["xz", "zy"]


def test_interrupted_output_is_not_mistaken_for_complete(data):
    d, vols = data
    dead = d / "train" / "kidney_1_dense_xz.tmp-999999999"  # a previous run's partial output
    (dead / "images").mkdir(parents=True)
    project_split(d, ("train",), progress=False)
    assert not dead.exists()
    img, _ = vols["kidney_1_dense"]
    np.testing.assert_array_equal(read_folder(d / "train" / "kidney_1_dense_xz" / "images"), img.transpose(1, 2, 0))


def test_pseudo_projections_keep_jp2_and_png(data):
    d, vols = data
    assert project_split(d, ("external",), progress=False) == {"hoa_ladaf_2020_31": ["xz", "zy"]}
    root = d / "train_ext" / "50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2__zy"
    assert list_slices(root / "images")[0].suffix == ".jp2" and list_slices(root / "labels")[0].suffix == ".png"
    img, lab = vols["hoa_ladaf_2020_31"]
    np.testing.assert_array_equal(read_folder(root / "images"), img.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_folder(root / "labels"), lab.transpose(2, 0, 1))


def test_projections_of_generated_labels_follow_their_record(data):
    """Pseudo labels rewritten by other models (their record changed) are projected again; human labels and
    unchanged generated labels are skipped as before."""
    import cv2

    from src.data.registry import labels_source_path

    d, vols = data
    hoa = d / "train_ext" / "50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_"
    labels_source_path(hoa / "labels").write_text('{"members": ["model a"]}')
    assert project_split(d, ("external",), progress=False) == {"hoa_ladaf_2020_31": ["xz", "zy"]}
    zy = d / "train_ext" / f"{hoa.name}_zy"
    assert (zy / "labels_source.json").read_text() == '{"members": ["model a"]}'
    assert project_split(d, ("external",), progress=False) == {"hoa_ladaf_2020_31": []}  # same labels: skipped
    _, lab = vols["hoa_ladaf_2020_31"]
    new = 255 - lab
    for i, path in enumerate(list_slices(hoa / "labels")):  # another model's labels
        cv2.imwrite(str(path), new[i])
    labels_source_path(hoa / "labels").write_text('{"members": ["model b"]}')
    assert project_split(d, ("external",), progress=False) == {"hoa_ladaf_2020_31": ["xz", "zy"]}
    np.testing.assert_array_equal(read_folder(zy / "labels"), new.transpose(2, 0, 1))
    assert (zy / "labels_source.json").read_text() == '{"members": ["model b"]}'
    # human labels carry no record: their projections are never called outdated
    project_split(d, ("train",), progress=False)
    assert project_split(d, ("train",), progress=False)["kidney_1_dense"] == []
    assert not (d / "train" / "kidney_1_dense_xz" / "labels_source.json").exists()


def test_no_pseudo_labels_yet_is_a_clear_error(data):
    d, _ = data
    ext = d / "train_ext" / "50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_" / "labels"
    for p in ext.iterdir():
        p.unlink()
    with pytest.raises(UserError, match="no labelled volume to project"):
        project_split(d, ("external",), progress=False)


def test_scripts_run_from_any_directory(data, tmp_path):
    d, _ = data
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for script in ("generate_mutliview.py", "generate_mutliview_pseudo.py"):
        out = subprocess.run([sys.executable, str(REPO_ROOT / script), str(d), "--quiet"], capture_output=True, text=True, cwd=tmp_path,
                             env=env)
        assert out.returncode == 0, out.stderr
    assert (d / "train" / "kidney_3_dense_zy" / "labels").is_dir()
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "generate_mutliview.py"), str(tmp_path / "nope")], capture_output=True, text=True,
                         cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
