"""The versions of the libraries that decide a run's numbers.

Training is deterministic per seed for one set of installed libraries, not across them: requirements.txt
allows ranges, and a fresh install that resolves a newer timm, smp or MONAI moves the demo's scores by
about what another seed does (README, Measured performance). Reports print these beside their figures.
"""

import re
import sys
from importlib import metadata
from pathlib import Path

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


def requirement_names(requirements: str | Path) -> list[str]:
    """The distribution names of a requirements file, in its order (comments and blank lines skipped)."""
    names = []
    for line in Path(requirements).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.match(r"[A-Za-z0-9_.\-]+", line).group(0))
    return names


def constraints_text(requirements: str | Path, date: str) -> str:
    """A pip constraints file pinning every package of ``requirements`` to its installed version."""
    pins = "".join(f"{name}=={version}\n" for name, version in library_versions(tuple(requirement_names(requirements))).items())
    return CONSTRAINTS_HEADER.format(date=date) + pins


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m src.utils.environment DATE > constraints.txt")
    sys.stdout.write(constraints_text(Path(__file__).resolve().parents[2] / "requirements.txt", sys.argv[1]))
