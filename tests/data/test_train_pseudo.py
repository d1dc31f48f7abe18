"""``data.train_pseudo``: pseudo labels of the train kidneys, written, projected and used for training."""

import shutil

import cv2
import numpy as np
import pytest

from generate_mutliview import main as project_train
from generate_mutliview_pseudo import main as project_pseudo
from src.data.datamodule_2d import MultiviewDataModule
from src.data.registry import Registry
from src.pseudo import main as generate_pseudo
from src.utils.errors import UserError
from tests.inference.helpers import write_checkpoint


def test_registry_places_pseudo_labels_of_train_kidneys_only():
    reg = Registry.load()
    assert reg["kidney_2"].pseudo_labels == "train/kidney_2/pseudo_labels"
    assert reg["kidney_2_xz"].pseudo_labels == "train/kidney_2_xz/pseudo_labels"
    assert reg["kidney_1_dense_zy"].pseudo_labels == "train/kidney_1_dense_zy/pseudo_labels"
    for name in ("kidney_3_dense", "kidney_3_dense_xz", "kidney_1_voi", "hoa_ladaf_2020_31", "kidney_5"):
        assert reg[name].pseudo_labels is None, name


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_phantom):
    """A copy of the phantom's train kidneys with projections and pseudo labels (and their projections)."""
    root = tmp_path_factory.mktemp("train_pseudo")
    data = root / "raw"
    shutil.copytree(tiny_phantom / "train", data / "train")
    project_train([str(data), "--quiet"])
    ckpt, _ = write_checkpoint(root / "model.ckpt")
    written = generate_pseudo(["--dataset_folder", str(data), "--checkpoints", str(ckpt), "--split", "train", "--tta", "none",
                               "--roi", "32", "--quiet", "--volumes", "kidney_1_dense", "kidney_2"])
    # an untrained net labels next to nothing: give the pseudo labels known content (vessel on every third row and column)
    for kidney in written:
        for path in (data / "train" / kidney / "pseudo_labels").glob("*.png"):
            label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            label[:] = 0
            label[:, ::3] = 200
            label[::3, :] = 200
            cv2.imwrite(str(path), label)
    done = project_pseudo([str(data), "--quiet"])
    return data, written, done


def test_generate_pseudo_split_train_writes_pseudo_labels_and_their_projections(labelled):
    data, written, done = labelled
    assert set(written) == {"kidney_1_dense", "kidney_2"}
    for kidney in written:
        images = sorted(p.name for p in (data / "train" / kidney / "images").iterdir())
        labels = sorted(p.stem for p in (data / "train" / kidney / "pseudo_labels").glob("*.png"))
        assert labels == [n.split(".")[0] for n in images]
        assert not (data / "train" / kidney / ".pseudo-work").exists()
        # human labels untouched, projections beside the image projections
        assert any((data / "train" / kidney / "labels").iterdir())
        for view in ("xz", "zy"):
            proj = data / "train" / f"{kidney}_{view}"
            assert len(list((proj / "pseudo_labels").iterdir())) == len(list((proj / "images").iterdir()))
    assert done == {"kidney_1_dense:pseudo_labels": ["xz", "zy"], "kidney_2:pseudo_labels": ["xz", "zy"]}
    assert project_pseudo([str(data), "--quiet"]) == {"kidney_1_dense:pseudo_labels": [], "kidney_2:pseudo_labels": []}


def _dm(data, **kw):
    args = dict(data_dir=str(data), fold=0, in_channels=3, img_size=32, batch_size=2, num_workers=0, aug="hard", progress=False)
    args.update(kw)
    dm = MultiviewDataModule(**args)
    dm.setup("fit")
    return dm


def _read(folder, n):
    path = next(folder.glob(f"{n:04d}.*"))
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("merge", ["union", "replace"])
def test_train_pseudo_uses_pseudo_labels_where_they_exist(labelled, merge):
    data, _, _ = labelled
    dm = _dm(data, train_pseudo=True, pseudo_merge=merge)
    sources = {s.group.name: s for s in dm.train_set.sources}
    for name in ("kidney_2", "kidney_2_xz", "kidney_1_dense_zy"):
        source = sources[name]
        group = source.group
        z = len(source) // 2
        human = _read(group.labels_dir(data), z) > 127
        pseudo = _read(group.pseudo_labels_dir(data), z) > 127
        assert pseudo.any() and (pseudo & ~human).any()  # the pseudo labels really add something here
        expected = (human | pseudo) if merge == "union" else pseudo
        np.testing.assert_array_equal(source.mask(z), expected.astype(np.uint8))
    # the validation volume keeps its human labels
    z = len(dm.val_set.source) // 2
    assert dm.val_set.source.extra is None
    val = dm.val_set.source
    np.testing.assert_array_equal(val.mask(z), (_read(val.group.labels_dir(data), val.label.first + z) > 127).astype(np.uint8))


def test_train_pseudo_off_or_absent_keeps_the_human_labels(labelled, tmp_path, tiny_phantom, caplog):
    data, _, _ = labelled
    off = {s.group.name: s for s in _dm(data).train_set.sources}
    assert all(s.extra is None for s in off.values())
    bare = tmp_path / "raw"
    shutil.copytree(tiny_phantom / "train", bare / "train")
    with caplog.at_level("INFO"):
        sources = _dm(bare, train_pseudo=True).train_set.sources
    assert all(s.extra is None for s in sources)
    assert "kidney_2 has no pseudo labels" in caplog.text


def test_mismatched_pseudo_labels_and_bad_merge_are_clear_errors(labelled, tmp_path):
    data, _, _ = labelled
    with pytest.raises(UserError, match="pseudo_merge"):
        MultiviewDataModule(data_dir=str(data), pseudo_merge="max")
    broken = tmp_path / "raw"
    shutil.copytree(data / "train" / "kidney_2", broken / "train" / "kidney_2")
    shutil.copytree(data / "train" / "kidney_3_dense", broken / "train" / "kidney_3_dense")
    shutil.copytree(data / "train" / "kidney_3_sparse", broken / "train" / "kidney_3_sparse")
    sorted((broken / "train" / "kidney_2" / "pseudo_labels").glob("*.png"))[-1].unlink()
    with pytest.raises(UserError, match="do not match the labels"):
        _dm(broken, train_pseudo=True)


def test_unknown_volume_for_split_train_is_a_clear_error(labelled, tmp_path):
    data, _, _ = labelled
    with pytest.raises(SystemExit) as exit_:
        generate_pseudo(["--dataset_folder", str(data), "--checkpoints", str(tmp_path / "x.ckpt"), "--split", "train",
                         "--volumes", "kidney_3_dense"])
    assert exit_.value.code == 2
