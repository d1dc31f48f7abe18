"""Shared fixtures: a tiny phantom dataset in the Kaggle layout, built once per test session."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """Path of a read-only-by-convention tiny phantom (tests that modify data copy it first)."""
    from src.data.phantom import build_phantom

    out = tmp_path_factory.mktemp("phantom") / "blood-vessel-segmentation"
    build_phantom(out, seed=0, size="tiny")
    return out
