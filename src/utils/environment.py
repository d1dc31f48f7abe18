"""The versions of the libraries that decide a run's numbers.

Training is deterministic per seed for one set of installed libraries, not across them: requirements.txt
allows ranges, and a fresh install that resolves a newer timm, smp or MONAI moves the demo's scores by
about what another seed does (README, Measured performance). Reports print these beside their figures.
"""

from importlib import metadata

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
