"""Hydra overrides that shrink the demo's and robustness' training runs to a few steps (a helper module, not a test module)."""

TINY_3D = ["trainer.max_epochs=1", "data.samples_per_epoch=4", "data.val_samples_per_epoch=2", "~callbacks.rich_progress_bar",
           "trainer.enable_progress_bar=false"]
TINY_TRAIN = ["data.img_size=64", "data.batch_size=4", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
              "~callbacks.rich_progress_bar", "trainer.enable_progress_bar=false"]
