import numpy as np
import pytest

from src.data.registry import VIEW_AXES, Registry
from src.utils.errors import UserError


@pytest.fixture(scope="module")
def registry():
    return Registry.load()


def test_every_group_of_the_recipe_is_described(registry):
    base = {"kidney_1_dense", "kidney_1_voi", "kidney_2", "kidney_3_sparse", "kidney_3_dense", "hoa_ladaf_2020_31"}
    for name in base - {"kidney_1_voi"}:
        assert {f"{name}_xz", f"{name}_zy"} <= set(registry.groups)
    assert base <= set(registry.groups)
    assert "kidney_1_voi_xz" not in registry.groups


def test_group_locations_voxel_sizes_and_weights(registry):
    k3d = registry["kidney_3_dense"]
    assert k3d.images == "train/kidney_3_sparse/images" and k3d.labels == "train/kidney_3_dense/labels"
    assert k3d.images_follow_labels
    assert registry["kidney_3_dense_xz"].images == "train/kidney_3_dense_xz/images"
    hoa = registry["hoa_ladaf_2020_31"]
    assert hoa.images.startswith("train_ext/50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_/")
    voxels = {g: registry[g].voxel_um for g in ("kidney_1_dense", "kidney_1_voi", "kidney_2", "kidney_3_sparse", "kidney_5", "kidney_6")}
    assert voxels == {"kidney_1_dense": 50, "kidney_1_voi": 5.2, "kidney_2": 50, "kidney_3_sparse": 50.16, "kidney_5": 50.28,
                      "kidney_6": 63.08}
    weights = {g: registry[g].weight for g in ("kidney_1_dense", "kidney_2", "kidney_3_dense", "kidney_3_sparse", "hoa_ladaf_2020_31")}
    assert weights == {"kidney_1_dense": 1.0, "kidney_2": 0.65, "kidney_3_dense": 1.0, "kidney_3_sparse": 0.85, "hoa_ladaf_2020_31": 0.65}
    assert registry["kidney_2_zy"].weight == 0.65 and registry["kidney_2_zy"].source == "kidney_2"
    assert registry["kidney_5"].labels is None and [g.name for g in registry.test_groups()] == ["kidney_5", "kidney_6"]


def names(groups):
    return {g.name for g in groups}


def with_views(*bases):
    return {f"{b}{v}" for b in bases for v in ("", "_xz", "_zy")}


def test_2d_folds_follow_the_recipe(registry):
    hoa = "hoa_ladaf_2020_31"
    f0 = registry.fold("2d", 0)
    assert names(f0.train) == with_views("kidney_1_dense", "kidney_2", hoa) and f0.val.name == "kidney_3_dense"
    f1 = registry.fold("2d", 1)
    assert names(f1.train) == with_views("kidney_1_dense", "kidney_3_dense", "kidney_3_sparse", hoa)
    assert f1.val.name == "kidney_2"
    f2 = registry.fold("2d", 2)
    assert names(f2.train) == with_views("kidney_2", "kidney_3_dense", "kidney_3_sparse") and f2.val.name == "kidney_1_dense"
    fall = registry.fold("2d", -1)
    assert names(fall.train) == with_views("kidney_1_dense", "kidney_2", "kidney_3_dense", "kidney_3_sparse", hoa)
    assert fall.val.name == "kidney_3_dense"


def test_3d_folds_have_no_projections(registry):
    f1 = registry.fold("3d", 1)
    assert names(f1.train) == {"kidney_1_dense", "kidney_3_sparse", "hoa_ladaf_2020_31"} and f1.val.name == "kidney_2"
    for fold in (0, 1, 2, -1):
        assert all(g.view == "z" for g in registry.fold("3d", fold).train)


def test_unknown_fold_and_group_are_clear_errors(registry):
    with pytest.raises(UserError, match="fold 7 is not defined for 2d"):
        registry.fold("2d", 7)
    with pytest.raises(UserError, match="unknown volume group 'kidney_9'"):
        registry["kidney_9"]


def test_view_axes_are_the_recipe_transposes():
    v = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert v.transpose(VIEW_AXES["xz"]).shape == (3, 4, 2)
    assert v.transpose(VIEW_AXES["zy"]).shape == (4, 2, 3)


def test_malformed_registry_is_one_line_error(tmp_path):
    bad = tmp_path / "registry.yaml"
    bad.write_text("groups:\n  k: {root: a}\n")
    with pytest.raises(UserError, match="group 'k' is incomplete"):
        Registry.load(bad)
    bad.write_text("groups: [\n")
    with pytest.raises(UserError, match="invalid YAML"):
        Registry.load(bad)
