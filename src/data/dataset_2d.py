"""2.5-D slice datasets over memory-mapped volumes.

A sample is a stack of ``in_channels`` neighbouring slices (z-r .. z+r, zeros beyond the ends of the
volume) of one volume group, each normalised with the volume's percentile statistics and clipped to
[0, 1], plus the label of the centre slice. Neighbours come from one contiguous read of the memory
map: no directory listing and no file decoding per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.registry import Group
from src.data.volumes import Volume


@dataclass(frozen=True)
class SliceSource:
    """One volume group ready for sampling: its image volume, label volume and label threshold.

    ``extra`` is a second label volume (pseudo labels, ``data.train_pseudo``) whose vessels are added
    to the label's: the union of the two masks.
    """

    group: Group
    image: Volume
    label: Volume
    threshold: int = 127
    extra: Volume | None = None

    def __len__(self) -> int:
        return len(self.image)

    def mask(self, index: int) -> np.ndarray:
        mask = np.asarray(self.label.data[index]) > self.threshold
        if self.extra is not None:
            mask |= np.asarray(self.extra.data[index]) > self.threshold
        return mask.astype(np.uint8)


def stack_slices(volume: Volume, index: int, channels: int, window: tuple[int, int, int] | None = None) -> np.ndarray:
    """(H, W, channels) float32: slices index-r..index+r normalised, zeros beyond the volume's ends.

    ``window=(y0, x0, size)`` reads only that square of each slice from the memory map.
    """
    r = channels // 2
    lo, hi = max(0, index - r), min(len(volume), index + r + 1)
    if window is None:
        rows, cols = slice(None), slice(None)
        height, width = volume.data.shape[1:]
    else:
        y0, x0, size = window
        rows, cols = slice(y0, y0 + size), slice(x0, x0 + size)
        height = width = size
    out = np.zeros((height, width, channels), dtype=np.float32)
    block = volume.normalise(volume.data[lo:hi, rows, cols])  # one read of the memory map
    start = lo - (index - r)
    out[..., start : start + (hi - lo)] = block.transpose(1, 2, 0)
    return out


def _to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        torch.from_numpy(np.ascontiguousarray(mask[None], dtype=np.float32)),
    )


def crop_window(mask: np.ndarray, size: int, mode: str, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``size`` square crop, chosen like albumentations' crops.

    ``"vessel"`` (CropNonEmptyMaskIfExists): a uniformly drawn foreground pixel ends up at a uniformly
    drawn position inside the crop (clipped to the slice); an empty mask gives a random crop.
    ``"random"`` (RandomCrop): uniform.
    """
    height, width = mask.shape
    if mode == "vessel" and mask.any():
        per_row = np.count_nonzero(mask, axis=1)
        cumulative = np.cumsum(per_row)
        k = int(rng.integers(cumulative[-1]))
        y = int(np.searchsorted(cumulative, k, side="right"))
        before = int(cumulative[y - 1]) if y else 0
        x = int(np.flatnonzero(mask[y])[k - before])
        y0 = min(max(y - int(rng.integers(size)), 0), height - size)
        x0 = min(max(x - int(rng.integers(size)), 0), width - size)
        return y0, x0
    return int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))


def organ_weights(sources: list[SliceSource]) -> np.ndarray:
    """Probability of drawing each source: its group's registry weight (shared by a volume's
    projections), renormalised over the sources present."""
    weights = np.array([s.group.weight for s in sources], dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError("sampling weights of the training groups sum to zero")
    return weights / weights.sum()


def cutmix_box(size: int, rng: np.random.Generator, beta: float = 1.0) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the pasted square-ish patch: side sqrt(1 - lam) of the crop, lam ~ Beta(beta, beta)."""
    cut = np.sqrt(1.0 - rng.beta(beta, beta))
    ch, cw = int(size * cut), int(size * cut)
    cy, cx = int(rng.integers(size)), int(rng.integers(size))
    return (int(np.clip(cy - ch // 2, 0, size)), int(np.clip(cy + ch // 2, 0, size)),
            int(np.clip(cx - cw // 2, 0, size)), int(np.clip(cx + cw // 2, 0, size)))


class TrainSlices(Dataset):
    """Training samples of 2.5-D stacks with their centre label, augmented.

    ``sampling="uniform"``: every slice of every source, ``multiplier`` times per epoch (stage 1).
    ``sampling="organ_weighted"``: each sample draws a source with :func:`organ_weights`, then a slice
    of it (stage 2, epochs as long as the uniform ones).
    ``cutmix_p``: with this probability a patch of another slice of the same source (same organ, same
    projection), drawn directly, is pasted into image and mask before the augmentation (as the
    original v2).

    With an :class:`~src.data.transforms.Augmentation` whose scheme starts with pad + crop, the crop
    is chosen on the label slice and only that square of the image stack is read and normalised;
    slices smaller than the crop are padded and cropped by the scheme's own first steps.
    """

    def __init__(self, sources: list[SliceSource], in_channels: int, augmentation=None, multiplier: int = 1, seed: int = 0,
                 sampling: str = "uniform", cutmix_p: float = 0.0, rotate3d_prob: float = 0.0, rotate3d_max_angle: float = 180.0):
        if sampling not in ("uniform", "organ_weighted"):
            raise ValueError(f"sampling must be 'uniform' or 'organ_weighted', got {sampling!r}")
        self.sources = sources
        self.in_channels = in_channels
        self.augmentation = augmentation
        self.rng = np.random.default_rng(seed)
        self.multiplier = max(1, int(multiplier))
        self.sampling = sampling
        self.cutmix_p = float(cutmix_p)
        self.rotate3d_prob = float(rotate3d_prob)
        self.rotate3d_max_angle = float(rotate3d_max_angle)
        self.weights = organ_weights(sources)
        self.source_index = np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(sources)])
        self.slice_index = np.concatenate([np.arange(len(s), dtype=np.int32) for s in sources])

    def __len__(self) -> int:
        return len(self.slice_index) * self.multiplier

    def reseed(self, seed: int) -> None:
        """New random streams for sampling, crops and augmentation (each DataLoader worker calls this)."""
        self.rng = np.random.default_rng(seed)
        if self.augmentation is not None:
            self.augmentation.set_random_seed(seed)

    def _draw(self, item: int) -> tuple[int, int]:
        if self.sampling == "organ_weighted":
            s = int(self.rng.choice(len(self.sources), p=self.weights))
            return s, int(self.rng.integers(len(self.sources[s])))
        item %= len(self.slice_index)
        return int(self.source_index[item]), int(self.slice_index[item])

    def _cropped(self, source: SliceSource, z: int) -> tuple[np.ndarray, np.ndarray]:
        """The slice's stack and label, cropped as the scheme's first steps would (uncropped without them)."""
        mask = source.mask(z)
        aug = self.augmentation
        if aug is not None and aug.crop is not None and self.rotate3d_prob and self.rng.random() < self.rotate3d_prob:
            return self._oblique(source, z, mask, aug)
        if aug is not None and aug.crop is not None and min(mask.shape) >= aug.size:
            y0, x0 = crop_window(mask, aug.size, aug.crop, self.rng)
            image = stack_slices(source.image, z, self.in_channels, (y0, x0, aug.size))
            return image, mask[y0 : y0 + aug.size, x0 : x0 + aug.size]
        image = stack_slices(source.image, z, self.in_channels)
        if aug is not None and aug.crop is not None:
            out = aug.pre(image=image, mask=mask)
            return out["image"], out["mask"]
        return image, mask

    def _oblique(self, source: SliceSource, z: int, mask: np.ndarray, aug) -> tuple[np.ndarray, np.ndarray]:
        """``data.rotate3d_prob``: the stack and label of the volume rotated in 3-D about the centre of the
        crop the scheme would take (chosen on this slice's label), interpolated from the memory maps."""
        from src.data.oblique import oblique_stack, random_rotation, sample_points, trilinear, window_centre
        from src.data.volumes import release_pages

        size = aug.size
        if min(mask.shape) >= size:
            y0, x0 = crop_window(mask, size, aug.crop, self.rng)
        else:  # a slice smaller than the crop: centred, the rest of the plane reads 0 outside the volume
            y0, x0 = (mask.shape[0] - size) // 2, (mask.shape[1] - size) // 2
        centre = window_centre(z, (y0, x0, size))
        rotation = random_rotation(self.rng, self.rotate3d_max_angle)
        image, label = oblique_stack(source.image, source.label, centre, rotation, size, self.in_channels, source.threshold)
        if source.extra is not None:  # pseudo labels united with the labels, on the same plane
            plane = sample_points(centre, rotation, size, 1)[:, 0]
            label |= (trilinear(source.extra.data, plane, 0.0) > source.threshold).astype(np.uint8)
            release_pages(source.extra.data)
        return image, label

    def __getitem__(self, item: int) -> dict:
        s, z = self._draw(item)
        source = self.sources[s]
        image, mask = self._cropped(source, z)
        partner = -1
        if self.cutmix_p and self.rng.random() < self.cutmix_p:
            partner = int(self.rng.integers(len(source)))
            image2, mask2 = self._cropped(source, partner)
            if image2.shape == image.shape:  # always, except for a scheme that crops late (whole slices)
                y0, y1, x0, x1 = cutmix_box(min(image.shape[:2]), self.rng)
                image, mask = image.copy(), mask.copy()
                image[y0:y1, x0:x1] = image2[y0:y1, x0:x1]
                mask[y0:y1, x0:x1] = mask2[y0:y1, x0:x1]
        aug = self.augmentation
        if aug is not None:
            out = (aug.pipeline if aug.crop is not None else aug.full)(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t, mask_t = _to_tensors(image, mask)
        return {"image": image_t, "mask": mask_t, "source": s, "slice": z, "cutmix_partner": partner}


class ValidationSlices(Dataset):
    """Whole slices ``start..stop-1`` of one volume, in order, for sliding-window validation.

    With ``context`` the slice before ``start`` comes first, flagged ``context=True``: it is not scored,
    it only lets a shard of a distributed evaluation stream the surface metric across its boundary.
    ``last`` flags the final slice of the volume (where the metric closes the volume).
    """

    def __init__(self, source: SliceSource, in_channels: int, start: int = 0, stop: int | None = None, context: bool = False):
        self.source = source
        self.in_channels = in_channels
        stop = len(source) if stop is None else stop
        first = start - 1 if context and start > 0 else start
        self.slices = list(range(first, stop))
        self.context_slice = first if first < start else None

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, item: int) -> dict:
        z = self.slices[item]
        image_t, mask_t = _to_tensors(stack_slices(self.source.image, z, self.in_channels), self.source.mask(z))
        return {
            "image": image_t,
            "mask": mask_t,
            "slice": z,
            "context": z == self.context_slice,
            "last": z == len(self.source) - 1,
        }
