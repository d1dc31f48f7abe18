"""2.5-D multiview datamodule: the registry's 2-D fold, read from the memory-mapped volume store."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, get_worker_info

from src.data.dataset_2d import SliceSource, TrainSlices, ValidationSlices
from src.data.registry import Group, Registry
from src.data.transforms import build_augmentation
from src.data.volumes import VolumeStore
from src.utils.errors import UserError
from src.utils.options import look_up
from src.utils.sizes import size_tuple

log = logging.getLogger(__name__)
# how an external group's pseudo labels meet its own labels: united, or replacing them
PSEUDO_MERGES = ("union", "replace")


def check_in_channels(in_channels: int) -> int:
    if int(in_channels) < 1 or int(in_channels) % 2 == 0:
        raise UserError(f"data.in_channels must be odd (1, 3, 5, ...): the centre slice and as many neighbours on each side, "
                        f"got {in_channels}")
    return int(in_channels)


def per_device_batch_size(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise UserError(f"data.batch_size={batch_size} does not divide over {world_size} devices; choose a multiple of {world_size}")
    return batch_size // world_size


def check_data_dir(data_dir: Path) -> None:
    if not Path(data_dir).is_dir():
        raise UserError(f"paths.data_dir={data_dir} is not a folder (set RAW_DATA_DIR in SETTINGS.json or override paths.data_dir)")


def make_loader(dataset, batch_size: int, hparams, sampler=None, worker_init_fn=None) -> DataLoader:
    """A DataLoader with the datamodule's worker settings (pinned memory only where CUDA is)."""
    workers = hparams.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=hparams.pin_memory and torch.cuda.is_available(),
        persistent_workers=hparams.persistent_workers and workers > 0,
        drop_last=False,
        worker_init_fn=worker_init_fn,
    )


def seed_augmentation_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own augmentation random stream.

    albumentations 2 keeps its own RNG inside ``Compose``; forked workers would otherwise all replay
    the parent's stream. ``torch.initial_seed()`` differs per worker and per epoch, and follows the run seed.
    """
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        rank = getattr(info.dataset, "rank", 0)  # worker seeds repeat across DDP processes: mix the rank in
        info.dataset.reseed((torch.initial_seed() + 7919 * rank) % 2**32)


class MultiviewDataModule(LightningDataModule):
    """Training slices of every group of ``fold`` present on disk (with their ``_xz``/``_zy`` projections),
    validation on whole slices of the fold's validation volume. The fold's external groups (the HOA kidney,
    labelled by ``generate_pseudo.py``) train only with ``external=True`` (stage 2, ``recipe=pseudo_v2``):
    stage 1 then gives the same model before and after pseudo-labelling.

    ``batch_size`` is the global batch: each of N devices gets ``batch_size / N``. Under DDP the
    validation volume is split into contiguous slice ranges, one per process (see ``ValidationSlices``).
    """

    def __init__(
        self,
        data_dir: str,
        fold: int = 0,
        in_channels: int = 3,
        img_size: int = 512,
        batch_size: int = 32,
        val_batch_size: int = 1,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        train_mutliplier: int = 2,
        aug: str = "hard",
        sampling: str = "uniform",
        cutmix_p: float = 0.0,
        train_pseudo: bool = False,
        pseudo_merge: str = "union",
        external: bool = False,
        scale_aug_center: float | None = None,
        scale_aug_limit: float = 0.2,
        scale_aug_p: float = 1.0,
        rotate3d_prob: float = 0.0,
        rotate3d_max_angle: float = 180.0,
        cache_dir: str | None = None,
        registry: str | None = None,
        progress: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_in_channels(in_channels)
        if sampling not in ("uniform", "organ_weighted"):
            raise UserError(f"data.sampling must be 'uniform' or 'organ_weighted', got {sampling!r}")
        if not 0.0 <= float(cutmix_p) <= 1.0:
            raise UserError(f"data.cutmix_p must be between 0 and 1, got {cutmix_p}")
        look_up(pseudo_merge, PSEUDO_MERGES, "data.pseudo_merge")
        self.data_dir = Path(data_dir)
        self.registry = Registry.load(registry)
        self.fold = self.registry.fold("2d", int(fold))
        if not 0.0 <= float(rotate3d_prob) <= 1.0:
            raise UserError(f"data.rotate3d_prob must be between 0 and 1, got {rotate3d_prob}")
        height, width = size_tuple(img_size, 2, "data.img_size")
        if height != width:  # d4's quarter turns would change a crop's shape within a batch
            raise UserError(f"data.img_size: the 2-D crops are square (the recipe's rotations need it), got {list(img_size)}")
        self.augmentation = build_augmentation(aug, height, scale_aug_center, scale_aug_limit, scale_aug_p)
        self.batch_size_per_device = batch_size
        self.train_set: TrainSlices | None = None
        self.val_set: ValidationSlices | None = None

    # ------------------------------------------------------------------ setup
    def _source(self, store: VolumeStore, group: Group, train: bool = False) -> SliceSource:
        image, label = store.open_pair(group.images_dir(self.data_dir), group.labels_dir(self.data_dir), group.images_follow_labels,
                                     group.label_kind)
        source = SliceSource(group, image, label, self.registry.label_threshold)
        if train and self.hparams.train_pseudo and group.split == "train":
            source = self._with_pseudo_labels(store, source)
        return source

    def _with_pseudo_labels(self, store: VolumeStore, source: SliceSource) -> SliceSource:
        """``data.train_pseudo``: add (union) or substitute (replace) the group's pseudo labels when they exist."""
        group = source.group
        if not group.has_pseudo_labels(self.data_dir):
            log.info("train_pseudo: %s has no pseudo labels (%s), its labels are used as they are",
                     group.name, group.pseudo_labels or "none in the registry")
            return source
        pseudo = store.open(group.pseudo_labels_dir(self.data_dir), "pseudo")
        if pseudo.shape != source.label.shape or pseudo.first != source.label.first:
            raise UserError(f"{pseudo.folder}: pseudo labels {pseudo.shape} from slice {pseudo.first:04d} do not match the labels "
                            f"{source.label.shape} from {source.label.first:04d}; "
                            "rerun generate_pseudo.py --split train (and the projections)")
        log.info("train_pseudo: %s trains on %s", group.name,
                 "its labels united with its pseudo labels" if self.hparams.pseudo_merge == "union" else "its pseudo labels")
        if self.hparams.pseudo_merge == "replace":
            return SliceSource(group, source.image, pseudo, source.threshold)
        return SliceSource(group, source.image, source.label, source.threshold, extra=pseudo)

    def setup(self, stage: str | None = None) -> None:
        check_data_dir(self.data_dir)
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self.batch_size_per_device = per_device_batch_size(self.hparams.batch_size, world)
        if self.train_set is not None and self.val_set is not None:
            return
        store = VolumeStore(self.hparams.cache_dir, progress=self.hparams.progress and rank == 0)
        sources = []
        for group in self.fold.train:
            if group.split == "external" and not self.hparams.external:
                if group.source is None and group.is_present(self.data_dir):
                    log.info("fold %d: %s has labels but is left out (data.external=false: stage 1 trains on the "
                             "competition's kidneys; recipe=pseudo_v2 adds it)", self.fold.fold, group.name)
                continue
            if group.is_present(self.data_dir):
                sources.append(self._source(store, group, train=True))
            elif group.source is not None and self.registry.groups[group.source].is_present(self.data_dir):
                # a projection of a volume that is there: the user has not run generate_mutliview.py
                log.warning("fold %d: %s has no %s projection under %s: training without it (run generate_mutliview.py %s)",
                            self.fold.fold, group.source, group.view, self.data_dir, self.data_dir)
            else:
                log.info("fold %d: %s not found under %s, skipped", self.fold.fold, group.labels, self.data_dir)
        if not sources:
            wanted = ", ".join(g.name for g in self.fold.train)
            raise UserError(f"fold {self.fold.fold} has no training data under {self.data_dir} (looked for {wanted})")
        val_group = self.fold.val
        if not val_group.is_present(self.data_dir):
            wanted = self.data_dir / str(val_group.labels)
            raise UserError(f"fold {self.fold.fold}: validation volume {val_group.name} not found ({wanted})")
        val_source = self._source(store, val_group)
        # crops and augmentations follow the run seed in the main process too (albumentations has its own RNG)
        seed = int(torch.randint(2**31, ()).item())
        self.train_set = TrainSlices(sources, self.hparams.in_channels, self.augmentation, self.hparams.train_mutliplier, seed,
                                     sampling=self.hparams.sampling, cutmix_p=self.hparams.cutmix_p,
                                     rotate3d_prob=self.hparams.rotate3d_prob, rotate3d_max_angle=self.hparams.rotate3d_max_angle)
        self.train_set.reseed(seed + 7919 * rank)
        self.train_set.rank = rank
        n = len(val_source)
        start, stop = rank * n // world, (rank + 1) * n // world
        self.val_set = ValidationSlices(val_source, self.hparams.in_channels, start, stop, context=world > 1)
        log.info(
            "fold %d: %d training slices from %s; validation %s slices %d-%d",
            self.fold.fold, len(self.train_set), ", ".join(s.group.name for s in sources), val_group.name, start, stop - 1,
        )

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1:
            sampler = DistributedSampler(self.train_set, num_replicas=world, rank=self.trainer.global_rank, shuffle=True)
        else:
            sampler = RandomSampler(self.train_set)
        return make_loader(self.train_set, self.batch_size_per_device, self.hparams, sampler, seed_augmentation_worker)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        return make_loader(self.val_set, self.hparams.val_batch_size, self.hparams)
