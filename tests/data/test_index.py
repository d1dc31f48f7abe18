import pandas as pd
import pytest

from src.data.index import COLUMNS, build_index, main
from src.utils.errors import UserError
from tests.data.mini import make_mini_dataset


def test_index_lists_every_present_group(tmp_path):
    data = tmp_path / "raw"
    vols = make_mini_dataset(data)
    out = tmp_path / "gt_extended.csv"
    main([str(data), "--out", str(out)])
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == COLUMNS
    counts = df.groupby("group").size().to_dict()
    assert counts == {"kidney_1_dense": 6, "kidney_3_sparse": 8, "kidney_3_dense": 4, "hoa_ladaf_2020_31": 5, "kidney_5": 3}
    k3d = df[df.group == "kidney_3_dense"]
    assert list(k3d.slice) == [2, 3, 4, 5]
    assert k3d.img_path.iloc[0] == "train/kidney_3_sparse/images/0002.tif"
    assert k3d.msk_path.iloc[0] == "train/kidney_3_dense/labels/0002.tif"
    assert k3d.id.iloc[0] == "kidney_3_dense_0002"
    hoa = df[df.group == "hoa_ladaf_2020_31"].iloc[0]
    assert hoa.img_path.endswith("images/0000.jp2") and hoa.msk_path.endswith("labels/0000.png")
    assert (hoa.height, hoa.width) == vols["hoa_ladaf_2020_31"][0].shape[1:]
    assert (df[df.group == "kidney_5"].msk_path == "").all()
    for row in df.itertuples():
        assert (data / row.img_path).exists()


def test_index_errors(tmp_path):
    with pytest.raises(UserError, match="data directory not found"):
        build_index(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no volume group"):
        build_index(tmp_path / "empty")
    data = tmp_path / "raw"
    make_mini_dataset(data)
    (data / "train" / "kidney_1_dense" / "labels" / "0003.tif").unlink()
    with pytest.raises(UserError, match="gap in slice numbering"):
        build_index(data)
