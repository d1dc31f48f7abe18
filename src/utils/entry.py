"""How every Hydra command starts: :func:`hydra_main` (the configs under ``configs/``, the project's
resolvers, user mistakes as one line via :func:`src.utils.errors.cli_main`), and :func:`compose_config`
(the same config composed in-process, for pipelines and tests)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from src.utils.errors import cli_main
from src.utils.resolvers import register_resolvers
from src.utils.settings import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


def hydra_main(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], object]]:
    """``@hydra.main`` on ``configs/<config_name>.yaml`` with the resolvers registered, wrapped by ``cli_main``."""

    def decorate(task: Callable[[DictConfig], object]) -> Callable[[], object]:
        # cli_main inside hydra.main: a user mistake exits with one line before Hydra prints a traceback
        main = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(cli_main(task))

        @functools.wraps(task)
        def run():
            register_resolvers()  # before Hydra resolves hydra.run.dir
            return main()

        return run

    return decorate


def compose_config(config_name: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """The config ``python -m <entry> <overrides>`` would run with, composed here; with ``output_dir`` the
    run writes there (``paths.output_dir``) and ``${hydra:...}`` interpolations resolve as in a real run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig().set_config(cfg)
    return cfg


def resolved_config(cfg: DictConfig, keys: Sequence[str] | None = None) -> dict:
    """The config as plain, resolved values (every top-level key but ``hydra``, or only ``keys``): what a
    run saves as ``config.yaml`` and what a finished run is compared with."""
    from omegaconf import OmegaConf

    wanted = [k for k in cfg if k != "hydra"] if keys is None else [k for k in keys if k in cfg]
    return {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in wanted}
