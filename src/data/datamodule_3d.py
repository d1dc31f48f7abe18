"""3-D random crops from the memory-mapped volume store (stage 2, MonAI DynUNet).

Nothing loads a whole volume: a crop is read from the memory maps, normalised with the volume's
statistics, padded (reflect for the image, zeros for the label) where the volume is smaller than the
crop. With probability ``vessel_p`` a crop must contain vessels: a few random crops are tried, then a
crop centred on a random vessel voxel (drawn through per-slice vessel counts computed once, so
every vessel voxel is equally likely). Augmentation is the recipe's 3-D d4: a random quarter turn in
one of the three planes and a random flip of each axis; ``aug=robust`` adds intensity changes of
another scan (:mod:`src.data.transforms_3d`, not in the recipe). Validation crops are drawn once from a fixed
seed, so every epoch scores the same crops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from src.data.datamodule_2d import check_data_dir, make_loader, per_device_batch_size, seed_augmentation_worker
from src.data.registry import Group, Registry
from src.data.transforms_3d import IntensityAugmentation3D
from src.data.volumes import Volume, VolumeStore, advise_random_access, read_region, release_pages
from src.utils.errors import UserError
from src.utils.sizes import size_tuple

log = logging.getLogger(__name__)


@dataclass
class VolumePair:
    """An image volume, its label volume and the vessel count of each label slice."""

    group: Group
    image: Volume
    label: Volume
    threshold: int
    slice_vessels: np.ndarray

    @classmethod
    def open(cls, store: VolumeStore, group: Group, data_dir: Path, threshold: int) -> VolumePair:
        image, label = store.open_pair(group.images_dir(data_dir), group.labels_dir(data_dir), group.images_follow_labels, group.label_kind)
        counts = np.array([np.count_nonzero(np.asarray(label.data[z]) > threshold) for z in range(len(label))], np.int64)
        release_pages(label.data)
        advise_random_access(image.data)
        advise_random_access(label.data)
        return cls(group, image, label, threshold, counts)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.image.shape

    def random_vessel_voxel(self, rng: np.random.Generator) -> tuple[int, int, int] | None:
        total = int(self.slice_vessels.sum())
        if total == 0:
            return None
        k = int(rng.integers(total))
        z = int(np.searchsorted(np.cumsum(self.slice_vessels), k, side="right"))
        ys, xs = np.nonzero(np.asarray(self.label.data[z]) > self.threshold)
        release_pages(self.label.data)
        i = int(rng.integers(len(ys)))
        return z, int(ys[i]), int(xs[i])

    def read(self, origin: tuple[int, int, int], size) -> tuple[np.ndarray, np.ndarray]:
        """(image float32, label uint8 0/1) crops of ``size`` (an int or (d, h, w)) at ``origin``, padded where outside."""
        size = crop_size(size)
        src = tuple(slice(max(0, o), max(0, min(n, o + c))) for o, n, c in zip(origin, self.shape, size))
        image = self.image.normalise(read_region(self.image.data, src))
        label = (read_region(self.label.data, src) > self.threshold).astype(np.uint8)
        pads = [(s.start - o, o + c - s.stop) for s, o, c in zip(src, origin, size)]
        if any(p for pair in pads for p in pair):
            image = np.pad(image, pads, mode="reflect" if min(image.shape) > 1 else "edge")
            label = np.pad(label, pads)
        return image, label


def crop_size(size, what: str = "data.img_size") -> tuple[int, int, int]:
    """An int (a cube) or a list of 3 ints (d, h, w)."""
    return size_tuple(size, 3, what)  # type: ignore[return-value]


def crop_origin(shape, size, rng: np.random.Generator, centre=None) -> tuple[int, int, int]:
    """A random crop origin (or one centring ``centre``), inside the volume where it is large enough."""
    origin = []
    for axis, (n, side) in enumerate(zip(shape, crop_size(size))):
        if n <= side:
            o = -((side - n) // 2)  # smaller than the crop: centred, padded on both sides
        elif centre is None:
            o = int(rng.integers(0, n - side + 1))
        else:
            o = int(np.clip(centre[axis] - side // 2, 0, n - side))
        origin.append(o)
    return tuple(origin)


def choose_crop(pair: VolumePair, size, vessel_p: float, rng: np.random.Generator, retries: int = 5):
    """Origin of a crop; with probability ``vessel_p`` one that holds vessels (bounded retries, then centred on one)."""
    size = crop_size(size)
    origin = crop_origin(pair.shape, size, rng)
    if rng.random() >= vessel_p:
        return origin
    for _ in range(retries):
        src = tuple(slice(max(0, o), max(0, o + c)) for o, c in zip(origin, size))
        if (read_region(pair.label.data, src) > pair.threshold).any():
            return origin
        origin = crop_origin(pair.shape, size, rng)
    voxel = pair.random_vessel_voxel(rng)
    return origin if voxel is None else crop_origin(pair.shape, size, rng, centre=voxel)


def d4_3d(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random quarter turn in one of the three planes (a half turn where the plane is not square, so the
    crop keeps its shape), then a random flip of each axis."""
    planes = ((0, 1), (0, 2), (1, 2))
    plane = planes[int(rng.integers(3))]
    k = int(rng.integers(4))
    if image.shape[plane[0]] != image.shape[plane[1]]:
        k = 2 * (k % 2)
    image, label = np.rot90(image, k, plane), np.rot90(label, k, plane)
    for axis in range(3):
        if rng.random() < 0.5:
            image, label = np.flip(image, axis), np.flip(label, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def _tensors(image: np.ndarray, label: np.ndarray) -> dict:
    return {"image": torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(label[None], dtype=np.float32))}


class RandomCrops3D(Dataset):
    """``samples`` random crops per epoch; a volume is drawn with its registry weight."""

    def __init__(self, pairs: list[VolumePair], size: int, samples: int, vessel_p: float = 0.5, augment: bool = True, seed: int = 0,
                 aug: str = "d4"):
        self.pairs, self.size, self.samples, self.vessel_p, self.augment = pairs, crop_size(size), int(samples), float(vessel_p), augment
        self.intensity = IntensityAugmentation3D(aug)
        weights = np.array([p.group.weight for p in pairs], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, item: int) -> dict:
        pair = self.pairs[int(self.rng.choice(len(self.pairs), p=self.weights))]
        image, label = pair.read(choose_crop(pair, self.size, self.vessel_p, self.rng), self.size)
        if self.augment:
            image, label = d4_3d(image, label, self.rng)
            image = self.intensity(image, self.rng)
        return _tensors(image, label)


class FixedCrops3D(Dataset):
    """Validation: ``samples`` crops of one volume chosen once from ``seed`` (the same every epoch)."""

    def __init__(self, pair: VolumePair, size: int, samples: int, vessel_p: float = 0.5, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.pair, self.size = pair, crop_size(size)
        self.origins = [choose_crop(pair, size, vessel_p, rng) for _ in range(int(samples))]

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, item: int) -> dict:
        return _tensors(*self.pair.read(self.origins[item], self.size))


class VolumeDataModule3D(LightningDataModule):
    """Random 3-D crops of the registry's 3-D fold (volumes present on disk), fixed validation crops."""

    def __init__(
        self,
        data_dir: str,
        fold: int = 0,
        img_size: int = 192,
        batch_size: int = 4,
        samples_per_epoch: int = 2000,
        val_samples_per_epoch: int = 200,
        vessel_p: float = 0.5,
        aug: str = "d4",
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        val_seed: int = 0,
        cache_dir: str | None = None,
        registry: str | None = None,
        progress: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir)
        self.registry = Registry.load(registry)
        self.fold = self.registry.fold("3d", int(fold))
        self.batch_size_per_device = batch_size
        self.train_set: RandomCrops3D | None = None
        self.val_set: FixedCrops3D | None = None

    def setup(self, stage: str | None = None) -> None:
        check_data_dir(self.data_dir)
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self.batch_size_per_device = per_device_batch_size(self.hparams.batch_size, world)
        if self.train_set is not None:
            return
        store = VolumeStore(self.hparams.cache_dir, progress=self.hparams.progress)
        threshold = self.registry.label_threshold
        pairs = []
        for group in self.fold.train:
            if group.is_present(self.data_dir):
                pairs.append(VolumePair.open(store, group, self.data_dir, threshold))
            else:
                log.info("3-D fold %d: %s not found under %s, skipped", self.fold.fold, group.labels, self.data_dir)
        if not pairs:
            raise UserError(f"3-D fold {self.fold.fold} has no training data under {self.data_dir}")
        val = self.fold.val
        if not val.is_present(self.data_dir):
            raise UserError(f"3-D fold {self.fold.fold}: validation volume {val.name} not found ({self.data_dir / str(val.labels)})")
        size = crop_size(self.hparams.img_size)
        seed = int(torch.randint(2**31, ()).item()) + 7919 * rank  # each process draws its own crops
        self.train_set = RandomCrops3D(pairs, size, self.hparams.samples_per_epoch // world, self.hparams.vessel_p, seed=seed,
                                      aug=self.hparams.aug)
        self.train_set.rank = rank
        self.val_set = FixedCrops3D(VolumePair.open(store, val, self.data_dir, threshold), size,
                                    self.hparams.val_samples_per_epoch, self.hparams.vessel_p, self.hparams.val_seed)
        self.val_set.origins = self.val_set.origins[rank::world]  # the fixed crops, split over processes

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.batch_size_per_device, self.hparams, worker_init_fn=seed_augmentation_worker)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.batch_size_per_device, self.hparams)
