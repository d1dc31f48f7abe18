"""A hand-made miniature of the Kaggle layout (a few slices per group) for store, index and projection tests."""

from pathlib import Path

import numpy as np

from src.data.volumes import write_slice


def write_group(root: Path, images: np.ndarray | None, labels: np.ndarray | None, image_suffix=".tif", label_suffix=".tif", first=0):
    for sub, vol, suffix in (("images", images, image_suffix), ("labels", labels, label_suffix)):
        if vol is None:
            continue
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(vol):
            write_slice(root / sub / f"{first + i:04d}{suffix}", arr)


def make_mini_dataset(data_dir: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """kidney_1_dense, kidney_3_sparse (+ dense labels of slices 2-5), the HOA kidney (jp2 + png), kidney_5."""
    rng = np.random.default_rng(seed)

    def vol(shape):
        img = rng.integers(100, 60000, size=shape, dtype=np.uint16)
        lab = (rng.random(shape) < 0.2).astype(np.uint8) * 255
        return img, lab

    k1 = vol((6, 9, 11))
    k3 = vol((8, 10, 7))
    k3_dense = (rng.random((4, 10, 7)) < 0.3).astype(np.uint8) * 255
    hoa = vol((5, 12, 8))
    k5 = vol((3, 13, 9))[0]
    write_group(data_dir / "train" / "kidney_1_dense", *k1)
    write_group(data_dir / "train" / "kidney_3_sparse", *k3)
    write_group(data_dir / "train" / "kidney_3_dense", None, k3_dense, first=2)
    ext = data_dir / "train_ext" / "50um_LADAF-2020-31_kidney_pag-0.01_0.02_jp2_"
    write_group(ext, hoa[0], hoa[1], image_suffix=".jp2", label_suffix=".png")
    write_group(data_dir / "test" / "kidney_5", k5, None)
    return {
        "kidney_1_dense": k1,
        "kidney_3_sparse": k3,
        "kidney_3_dense": (k3[0][2:6], k3_dense),
        "hoa_ladaf_2020_31": hoa,
        "kidney_5": (k5, None),
    }
