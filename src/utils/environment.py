"""The versions of the libraries that decide a run's numbers.

Training is deterministic per seed for one set of installed libraries, not across them: requirements.txt
allows ranges, and a fresh install that resolves a newer timm, smp or MONAI moves the demo's scores by
about what another seed does (README, Measured performance). Reports print these beside their figures.
"""

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from src.utils.settings import REPO_ROOT

# Distribution names, in the order they are printed.
LIBRARIES = ("torch", "lightning", "segmentation-models-pytorch", "timm", "monai", "albumentations", "numpy",
             "opencv-python-headless")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """``{distribution: version}``; ``"absent"`` for one that is not installed."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def versions_line(names: tuple[str, ...] = LIBRARIES) -> str:
    """One line: ``torch 2.14.1, lightning 2.6.6, ...``."""
    return ", ".join(f"{name} {version}" for name, version in library_versions(names).items())


CONSTRAINTS_HEADER = """\
# The exact versions of requirements.txt's packages behind the README's figures of {date} (a fresh
# `make install` on the 2-core CPU machine). Optional: `make demo CONSTRAINTS=constraints.txt` (any target
# that installs) installs these; plain `make install` keeps requirements.txt's ranges. Training is
# deterministic per seed for one set of versions, not across them (README, Measured performance).
# Top-level packages only. Rewrite from the current install: python -m src.utils.environment DATE > constraints.txt
"""


def requirements(path: str | Path) -> list[Requirement]:
    """The requirements of a requirements file, in its order (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def constraints_text(path: str | Path, date: str) -> str:
    """A pip constraints file pinning every package of the requirements file ``path`` to its installed version."""
    pins = "".join(f"{name}=={version}\n" for name, version in library_versions(tuple(r.name for r in requirements(path))).items())
    return CONSTRAINTS_HEADER.format(date=date) + pins


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m src.utils.environment DATE > constraints.txt")
    sys.stdout.write(constraints_text(REPO_ROOT / "requirements.txt", sys.argv[1]))
