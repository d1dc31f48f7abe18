"""Networks from Lightning checkpoints, and finding stage-1 checkpoints by run name.

A checkpoint written by this project carries the network's ``create_model`` arguments in
``hyper_parameters["net"]``; the network is rebuilt from them (pretrained-weight download switched
off, the checkpoint's weights are loaded instead), so no table of architectures exists anywhere.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from src.utils.errors import UserError

_DICE = re.compile(r"dice_(\d+(?:\.\d+)?)")


@dataclass
class Member:
    """One member of an ensemble: a network, its input channels, its weight and its test-time augmentation."""

    net: torch.nn.Module
    in_channels: int
    weight: float = 1.0
    tta: str = "none"
    name: str = ""
    roi_size: int | list[int] | None = None  # the window its training run validated with, as recorded (None: unknown)
    threshold: float = 0.5  # what predict thresholds it at with threshold=checkpoint (see :func:`threshold_of`)
    threshold_source: str = "default"


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or not isinstance((ckpt.get("hyper_parameters") or {}).get("net"), dict):
        raise UserError(f"{path}: checkpoint has no network config (hyper_parameters.net); was it written by this project?")
    return ckpt


def _net_state(ckpt: dict) -> dict:
    return {k[4:].replace("_orig_mod.", ""): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def load_member_3d(path: str | Path, weight: float = 1.0, tta: str = "none", device="cpu") -> Member:
    """A 3-D (DynUNet) member from a stage-2 3-D checkpoint."""
    from src.models.module_3d import build_net_3d

    path = Path(path)
    ckpt = _read(path)
    if ckpt["hyper_parameters"].get("net_kind") != "dynunet":
        raise UserError(f"{path}: not a 3-D DynUNet checkpoint (give it in checkpoints=, not checkpoints_3d=)")
    net = build_net_3d(ckpt["hyper_parameters"]["net"])
    net.load_state_dict(_net_state(ckpt))
    return Member(net.eval().to(device), 1, float(weight), tta, str(path))


DEFAULT_THRESHOLD = 0.5
DEFAULT_MARGIN = 0.05  # model.predict_threshold_margin of checkpoints written before the setting existed


def validated_threshold(scores: dict[float, float], margin: float = DEFAULT_MARGIN) -> float:
    """The threshold ``validated`` picks from ``{threshold: val/sd}``: the one nearest the recipe's 0.5 among
    those scoring within ``margin`` (a fraction) of the best. A validation kidney is not a test kidney: a
    threshold that beats 0.5 there by a percent or two did not carry over (README, "Which threshold predict
    applies": on the independently written phantom 0.4 lost 0.02 / 0.06 on the test kidneys), while a short
    run whose probabilities sit below 0.5 (0.5 scoring near zero) still gets the threshold that works.
    ``margin=0``: the best, ties to the nearest 0.5."""
    best = max(scores.values())
    near = [t for t, v in scores.items() if v >= (1.0 - margin) * best]
    return min(near, key=lambda t: (round(abs(t - DEFAULT_THRESHOLD), 9), -scores[t], t))


def threshold_of(ckpt: dict, path: Path | str = "") -> tuple[float, str]:
    """(threshold, where it comes from) of a 2-D checkpoint, for ``predict threshold=checkpoint``.

    ``hyper_parameters.predict_threshold`` is a probability (the recipe's 0.5) or ``validated``: the
    :func:`validated_threshold` of the ``val/sd@<th>`` in ``checkpoint["validation"]`` (the metrics of the
    validation the checkpoint was saved after), with the checkpoint's ``predict_threshold_margin``. A
    checkpoint without the setting (written before it existed) or without a recorded validation gets 0.5,
    said in the source."""
    hparams = ckpt.get("hyper_parameters") or {}
    setting = hparams.get("predict_threshold", DEFAULT_THRESHOLD)
    if setting != "validated":
        return float(setting), "its training config"
    scores = {float(k.split("@", 1)[1]): float(v) for k, v in (ckpt.get("validation") or {}).items() if k.startswith("val/sd@")}
    if not scores:
        return DEFAULT_THRESHOLD, f"{DEFAULT_THRESHOLD}: 'validated' but no validation recorded in {Path(path).name}"
    margin = float(hparams.get("predict_threshold_margin", DEFAULT_MARGIN))
    chosen, best = validated_threshold(scores, margin), max(scores, key=scores.get)
    epoch = (ckpt.get("validation") or {}).get("epoch")
    if chosen == best:
        at_default = scores.get(DEFAULT_THRESHOLD)
        versus = f"; {at_default:.4f} at {DEFAULT_THRESHOLD}" if at_default is not None and chosen != DEFAULT_THRESHOLD else ""
        return chosen, f"validated: val/sd {scores[chosen]:.4f} at epoch {epoch}{versus}"
    return chosen, (f"validated: val/sd {scores[chosen]:.4f} at epoch {epoch}, within {margin:g} of the best "
                    f"{scores[best]:.4f} at {best:g}")


def checkpoint_threshold(path: str | Path) -> tuple[float, str]:
    """:func:`threshold_of` of the checkpoint file at ``path``."""
    return threshold_of(_read(Path(path)), path)


def load_network(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The network of a checkpoint, in eval mode on ``device``, and its ``create_model`` arguments
    (plus ``roi_size``, the window its training validated with, when the checkpoint records it)."""
    from src.models.module_2d import build_net

    path = Path(path)
    ckpt = _read(path)
    if ckpt["hyper_parameters"].get("net_kind") == "dynunet":
        raise UserError(f"{path}: a 3-D DynUNet checkpoint; give it in checkpoints_3d= (the 2.5-D engine takes 2-D models)")
    net_cfg = {**ckpt["hyper_parameters"]["net"], "encoder_weights": None}
    net = build_net(net_cfg)
    net.load_state_dict(_net_state(ckpt))
    threshold, source = threshold_of(ckpt, path)
    return net.eval().to(device), {**net_cfg, "roi_size": (ckpt["hyper_parameters"].get("val_window") or {}).get("roi_size"),
                                   "threshold": threshold, "threshold_source": source}


def load_member(path: str | Path, weight: float = 1.0, tta: str = "none", device="cpu") -> Member:
    net, cfg = load_network(path, device)
    return Member(net, int(cfg.get("in_channels", 3)), float(weight), tta, str(path), cfg["roi_size"],
                  cfg["threshold"], cfg["threshold_source"])


def checkpoint_score(path: Path) -> float:
    """The validation Dice in a checkpoint's file name (``epoch_007_dice_0.8123.ckpt``); -1 when absent."""
    m = _DICE.search(path.stem)
    return float(m.group(1)) if m else -1.0


@dataclass(frozen=True)
class MonitoredBest:
    """What Lightning's ModelCheckpoint recorded as the best file of a run: by its own ``monitor`` and ``mode``."""

    path: Path
    monitor: str
    mode: str  # "max" or "min"
    score: float


def monitored_best(folder: Path, candidates: list[Path]) -> MonitoredBest | None:
    """The best checkpoint of ``folder`` as its ModelCheckpoint ranked it (``monitor``, ``mode``), read from the
    callback state in the newest file there (``last.ckpt`` after a finished run); None when that file has no
    such state or names a file that is not among ``candidates`` (moved, deleted, another folder's)."""
    here = [c for c in candidates if c.parent == folder]
    if not here:
        return None
    newest = max(here, key=lambda c: c.stat().st_mtime)
    try:
        state = torch.load(newest, map_location="cpu", weights_only=False, mmap=True).get("callbacks") or {}
    except Exception:  # a foreign or truncated file: the name rule decides
        return None
    by_name = {c.name: c for c in here}
    for key, value in state.items():
        if not (key.startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("best_model_path")):
            continue
        try:
            settings = ast.literal_eval(key[len("ModelCheckpoint"):])
        except (SyntaxError, ValueError):
            settings = {}
        best = by_name.get(Path(value["best_model_path"]).name)
        score = value.get("best_model_score")
        if best is not None and score is not None and value.get("monitor"):
            return MonitoredBest(best, str(value["monitor"]), str(settings.get("mode", "max")), float(score))
    return None


def best_of(candidates: list[Path]) -> Path:
    """The best of a run's checkpoints: the file its ModelCheckpoint recorded as best by its ``monitor`` and
    ``mode`` (:func:`monitored_best`; over several folders, the best of their bests when they monitor the same
    value); else the highest Dice in the file name (newest on ties); else the newest.

    The file name carries ``val/dice`` whatever the monitor, so ranking names alone would disagree with a run
    trained with another ``callbacks.model_checkpoint.monitor`` (its top-k files are chosen by that monitor)."""
    folders = sorted({c.parent for c in candidates})
    bests = [b for b in (monitored_best(f, candidates) for f in folders) if b is not None]
    if bests and len(bests) == len(folders) and len({(b.monitor, b.mode) for b in bests}) == 1:
        sign = -1.0 if bests[0].mode == "min" else 1.0
        return max(bests, key=lambda b: (sign * b.score, b.path.stat().st_mtime)).path
    scored = [c for c in candidates if checkpoint_score(c) >= 0]
    if scored:
        return max(scored, key=lambda c: (checkpoint_score(c), c.stat().st_mtime))
    return max(candidates, key=lambda c: c.stat().st_mtime)


def best_checkpoint_in(folder: str | Path) -> Path:
    """The best checkpoint of one run's ``checkpoints`` folder."""
    candidates = list(Path(folder).glob("*.ckpt"))
    if not candidates:
        raise UserError(f"no checkpoint in {folder}")
    return best_of(candidates)


def find_checkpoint(logs_dir: str | Path, run_name: str, fold: int) -> Path:
    """The best checkpoint of a stage-1 run over ``<fold>`` and ``<fold>_vN`` (:func:`best_of`: the file the
    run's ModelCheckpoint recorded as best, else the highest Dice in the names, else ``last.ckpt``).
    Raises :class:`UserError` listing the folders searched when there is none.
    """
    root = Path(logs_dir) / "train" / "runs" / run_name
    folders = sorted(p for p in root.glob(f"{fold}*") if p.is_dir() and re.fullmatch(rf"{fold}(_v\d+)?", p.name))
    candidates = [c for f in folders for c in (f / "checkpoints").glob("*.ckpt")]
    if not candidates:
        looked = ", ".join(str(f / "checkpoints") for f in folders) or str(root / str(fold) / "checkpoints")
        raise UserError(f"no checkpoint of run {run_name} fold {fold} (looked in {looked})")
    return best_of(candidates)
