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


def test_constraints_txt_pins_every_requirement_inside_its_range():
    """`make install CONSTRAINTS=constraints.txt` must resolve: one exact pin per requirement, each allowed by
    requirements.txt's range (a pin outside it would make pip fail with a conflict)."""
    from src.utils.environment import requirements
    from src.utils.settings import REPO_ROOT

    ranges = {r.name: r.specifier for r in requirements(REPO_ROOT / "requirements.txt")}
    pins = requirements(REPO_ROOT / "constraints.txt")
    assert [p.name for p in pins] == list(ranges)
    for pin in pins:
        (spec,) = pin.specifier
        assert spec.operator == "==", pin
        assert ranges[pin.name].contains(spec.version), (pin, ranges[pin.name])


def test_constraints_text_pins_the_installed_versions(tmp_path):
    from src.utils.environment import constraints_text

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# a comment\ntorch>=2.3,<=2.14.1\n\nnumpy>=1.24  # trailing\n")
    text = constraints_text(requirements, "2026-12-07")
    assert text.splitlines()[-2:] == [f"torch=={metadata.version('torch')}", f"numpy=={metadata.version('numpy')}"]
    assert "figures of 2026-12-07" in text
