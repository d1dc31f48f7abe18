"""OmegaConf resolvers used by the Hydra configs; registered once by every entry point.

* ``${settings:KEY}``  a path from SETTINGS.json (``REPO_ROOT`` is the checkout)
* ``${auto_precision:}``  "16-mixed" where CUDA is available, else ``${cpu_precision:}`` (Lightning would
  turn 16-mixed into bf16-mixed on any CPU with a warning)
* ``${cpu_precision:}``  "bf16-mixed" on a CPU with bfloat16 instructions, else "32-true"
  (:mod:`src.utils.precision`)
* ``${claim_run_dir:PATH}``  PATH itself if it does not exist yet, else PATH_v2, PATH_v3, ...: the
  folder is created atomically, so two runs started at once never share an output folder. Within
  a process the answer is cached, so resolving the config again gives the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from src.utils.settings import register_omegaconf_resolver

_CLAIMED: dict[str, str] = {}


def claim_run_dir(path: str) -> str:
    """Create and return the first of ``path``, ``path_v2``, ``path_v3``... that did not exist."""
    if path in _CLAIMED:
        return _CLAIMED[path]
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    version = 1
    while True:
        candidate = base if version == 1 else base.with_name(f"{base.name}_v{version}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            version += 1
            continue
        _CLAIMED[path] = str(candidate)
        return str(candidate)


def register_resolvers() -> None:
    register_omegaconf_resolver()
    from src.utils.precision import auto_precision, cpu_precision

    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", auto_precision)
    if not OmegaConf.has_resolver("cpu_precision"):
        OmegaConf.register_new_resolver("cpu_precision", cpu_precision)
    if not OmegaConf.has_resolver("claim_run_dir"):
        OmegaConf.register_new_resolver("claim_run_dir", claim_run_dir)
