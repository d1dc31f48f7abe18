"""The volume registry (``configs/registry.yaml``): every volume group, its files, voxel size, weight, folds.

Everything that needs to know which kidneys exist asks a :class:`Registry`; nothing else lists them.
Projection groups (``<name>_xz``, ``<name>_zy``) are derived here from the base groups that declare
``projections: true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from src.utils.errors import UserError

DEFAULT_REGISTRY = Path(__file__).resolve().parents[2] / "configs" / "registry.yaml"
# axes of a (Z, H, W) volume that become (slice, row, column) of each view
# The views of a volume: the axis order that makes each view's slices the first axis
VIEW_AXES = {"z": (0, 1, 2), "xz": (1, 2, 0), "zy": (2, 0, 1)}
VIEWS = tuple(VIEW_AXES)
SPLITS = ("train", "external", "test")


@dataclass(frozen=True)
class Group:
    """One volume group: a folder of image slices and (optionally) label slices."""

    name: str
    organ: str
    split: str
    root: str
    images: str
    labels: str | None
    voxel_um: float
    weight: float
    view: str = "z"
    source: str | None = None  # base group of a projection
    images_follow_labels: bool = False
    projections: bool = False
    pseudo_labels: str | None = None  # pseudo labels of a train kidney (generate_pseudo.py --split train)

    def images_dir(self, data_dir: str | Path) -> Path:
        return Path(data_dir) / self.images

    def labels_dir(self, data_dir: str | Path) -> Path | None:
        return Path(data_dir) / self.labels if self.labels else None

    @property
    def label_kind(self) -> str:
        """How :class:`~src.data.volumes.VolumeStore` reads its ``labels``: an external kidney's are stage-1
        pseudo labels (soft, ``round(p * 255)``), the others masks (0/255, or 0/1)."""
        return "pseudo" if self.split == "external" else "label"

    def pseudo_labels_dir(self, data_dir: str | Path) -> Path | None:
        return Path(data_dir) / self.pseudo_labels if self.pseudo_labels else None

    def has_pseudo_labels(self, data_dir: str | Path) -> bool:
        folder = self.pseudo_labels_dir(data_dir)
        return folder is not None and _has_slices(folder)

    def is_present(self, data_dir: str | Path, need_labels: bool = True) -> bool:
        """Whether the group's slice folders exist (with labels, when ``need_labels``)."""
        if not _has_slices(self.images_dir(data_dir)):
            return False
        if need_labels:
            labels = self.labels_dir(data_dir)
            return labels is not None and _has_slices(labels)
        return True


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold of the 2-D or the 3-D stage: the groups it trains on and the one it validates on."""

    kind: str
    fold: int
    train: tuple[Group, ...]
    val: Group


@dataclass
class Registry:
    """Every volume group (projections included) and the folds, loaded from ``configs/registry.yaml`` (:meth:`load`)."""

    groups: dict[str, Group]
    folds: dict[str, dict[int, Fold]]
    train_voxel_um: float
    label_threshold: int
    path: Path = field(default=DEFAULT_REGISTRY)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None) -> Registry:
        path = Path(path) if path else DEFAULT_REGISTRY
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as err:
            raise UserError(f"{path}: cannot read the volume registry ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise UserError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
        groups: dict[str, Group] = {}
        for name, spec in (raw.get("groups") or {}).items():
            for group in _expand(path, name, spec):
                groups[group.name] = group
        folds = {kind: {} for kind in ("2d", "3d")}
        for kind in folds:
            for fold, spec in (raw.get(f"folds_{kind}") or {}).items():
                folds[kind][int(fold)] = _fold(path, groups, kind, int(fold), spec)
        return cls(groups, folds, float(raw.get("train_voxel_um", 50.0)), int(raw.get("label_threshold", 127)), path)

    # ------------------------------------------------------------------ queries
    def __getitem__(self, name: str) -> Group:
        try:
            return self.groups[name]
        except KeyError:
            raise UserError(f"unknown volume group {name!r} (registry {self.path} has: {', '.join(self.groups)})") from None

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups.values())

    def fold(self, kind: str, fold: int) -> Fold:
        if kind not in self.folds:
            raise UserError(f"unknown fold kind {kind!r} (expected '2d' or '3d')")
        if fold not in self.folds[kind]:
            known = ", ".join(map(str, sorted(self.folds[kind])))
            raise UserError(f"fold {fold} is not defined for {kind} in {self.path} (defined: {known})")
        return self.folds[kind][fold]

    def base_groups(self, split: str | None = None) -> list[Group]:
        """Groups read from the download or external data (not projections), optionally of one split."""
        return [g for g in self.groups.values() if g.view == "z" and (split is None or g.split == split)]

    def test_groups(self) -> list[Group]:
        return self.base_groups("test")


def labels_source_path(labels_dir: str | Path) -> Path:
    """The record of what wrote a folder of generated labels (pseudo labels, and their projections):
    ``<labels_dir>_source.json`` beside the folder (not inside: the folder holds only label slices)."""
    labels_dir = Path(labels_dir)
    return labels_dir.with_name(labels_dir.name + "_source.json")


def _has_slices(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    return any(p.suffix.lower() in (".tif", ".tiff", ".jp2", ".png") for p in folder.iterdir())


def _expand(path: Path, name: str, spec: dict) -> list[Group]:
    try:
        root = str(spec["root"])
        split = str(spec["split"])
        base = Group(
            name=name,
            organ=str(spec.get("organ", name)),
            split=split,
            root=root,
            images=str(spec.get("images", f"{root}/images")),
            labels=None if split == "test" else str(spec.get("labels", f"{root}/labels")),
            voxel_um=float(spec["voxel_um"]),
            weight=float(spec.get("weight", 1.0)),
            images_follow_labels=bool(spec.get("images_follow_labels", False)),
            projections=bool(spec.get("projections", False)),
            pseudo_labels=_pseudo_labels(spec, root, split),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: group {name!r} is incomplete or malformed ({err!r})") from None
    if split not in SPLITS:
        raise UserError(f"{path}: group {name!r} has split {split!r}, expected one of {SPLITS}")
    groups = [base]
    if base.projections:
        for view in VIEWS[1:]:
            proot = f"{root}_{view}"
            groups.append(
                Group(
                    name=f"{name}_{view}",
                    organ=base.organ,
                    split=split,
                    root=proot,
                    images=f"{proot}/images",
                    labels=f"{proot}/labels",
                    voxel_um=base.voxel_um,
                    weight=base.weight,
                    view=view,
                    source=name,
                    pseudo_labels=f"{proot}/pseudo_labels" if base.pseudo_labels else None,
                )
            )
    return groups


def _pseudo_labels(spec: dict, root: str, split: str) -> str | None:
    """Where pseudo labels of a train kidney go: ``<root>/pseudo_labels`` unless the group opts out
    (``pseudo_labels: false``) or is a dense subset whose images live elsewhere (kidney_3_dense)."""
    value = spec.get("pseudo_labels", split == "train" and not spec.get("images_follow_labels", False))
    if value is False or value is None:
        return None
    return f"{root}/pseudo_labels" if value is True else str(value)


def _fold(path: Path, groups: dict[str, Group], kind: str, fold: int, spec: dict) -> Fold:
    def group(name: str) -> Group:
        if name not in groups:
            raise UserError(f"{path}: fold {fold} ({kind}) names unknown group {name!r}")
        return groups[name]

    train: list[Group] = []
    for name in spec.get("train", []):
        base = group(name)
        train.append(base)
        if spec.get("projections", False):
            train.extend(g for g in groups.values() if g.source == base.name)
    return Fold(kind, fold, tuple(train), group(spec["val"]))
