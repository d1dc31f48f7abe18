from importlib import metadata

from src.utils.environment import LIBRARIES, library_versions, versions_line


def test_library_versions_reads_the_installed_distributions():
    versions = library_versions()
    assert list(versions) == list(LIBRARIES)
    assert versions["torch"] == metadata.version("torch")
    assert versions["albumentations"] == "2.0.8"  # the pin in requirements.txt


def test_a_missing_distribution_is_named_absent():
    assert library_versions(("no-such-distribution-bvs",)) == {"no-such-distribution-bvs": "absent"}


def test_versions_line():
    assert versions_line(("torch",)) == f"torch {metadata.version('torch')}"
