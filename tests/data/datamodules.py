"""Small datamodules for data tests (a helper module, not a test module)."""

from src.data.datamodule_2d import MultiviewDataModule


def tiny_2d_datamodule(data_dir, **kw) -> MultiviewDataModule:
    """The 2-D datamodule on fold 0 at 32 px, batch 4, no workers, no progress bars; ``kw`` overrides any argument."""
    args = dict(data_dir=str(data_dir), fold=0, in_channels=3, img_size=32, batch_size=4, num_workers=0, aug="hard", progress=False)
    args.update(kw)
    return MultiviewDataModule(**args)
