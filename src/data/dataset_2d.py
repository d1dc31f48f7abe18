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
    """One volume group ready for sampling: its image volume, label volume and label threshold."""

    group: Group
    image: Volume
    label: Volume
    threshold: int = 127

    def __len__(self) -> int:
        return len(self.image)

    def mask(self, index: int) -> np.ndarray:
        return (np.asarray(self.label.data[index]) > self.threshold).astype(np.uint8)


def stack_slices(volume: Volume, index: int, channels: int) -> np.ndarray:
    """(H, W, channels) float32: slices index-r..index+r normalised, zeros beyond the volume's ends."""
    r = channels // 2
    lo, hi = max(0, index - r), min(len(volume), index + r + 1)
    height, width = volume.data.shape[1:]
    out = np.zeros((height, width, channels), dtype=np.float32)
    block = volume.normalise(volume.data[lo:hi])  # (hi - lo, H, W), one read of the memory map
    start = lo - (index - r)
    out[..., start : start + (hi - lo)] = block.transpose(1, 2, 0)
    return out


def _to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        torch.from_numpy(np.ascontiguousarray(mask[None], dtype=np.float32)),
    )


class TrainSlices(Dataset):
    """Every slice of every source, ``multiplier`` times per epoch, augmented by ``transform``."""

    def __init__(self, sources: list[SliceSource], in_channels: int, transform=None, multiplier: int = 1):
        self.sources = sources
        self.in_channels = in_channels
        self.transform = transform
        self.multiplier = max(1, int(multiplier))
        self.source_index = np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(sources)])
        self.slice_index = np.concatenate([np.arange(len(s), dtype=np.int32) for s in sources])

    def __len__(self) -> int:
        return len(self.slice_index) * self.multiplier

    def __getitem__(self, item: int) -> dict:
        item %= len(self.slice_index)
        source = self.sources[self.source_index[item]]
        z = int(self.slice_index[item])
        image = stack_slices(source.image, z, self.in_channels)
        mask = source.mask(z)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t, mask_t = _to_tensors(image, mask)
        return {"image": image_t, "mask": mask_t, "source": int(self.source_index[item]), "slice": z}


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
