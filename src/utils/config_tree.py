"""Print a composed Hydra config as a rich tree (what ``extras.print_config`` shows at start-up)."""

from __future__ import annotations

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


def print_config_tree(cfg: DictConfig, resolve: bool = False) -> None:
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    fields = [f for f in ORDER if f in cfg] + [f for f in cfg if f not in ORDER and f != "hydra"]
    for field in fields:
        branch = tree.add(field, style="dim", guide_style="dim")
        value = cfg[field]
        text = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
