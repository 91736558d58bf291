"""Shared fixtures: the real data directory and an isolated decode/feature cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$TL_DATA_DIR``, else ``../shared/data`` beside the checkout (where CI puts it)."""
    path = Path(os.environ.get("TL_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    assert (path / "pneumoniamnist.npz").is_file(), f"real data missing: set TL_DATA_DIR (looked in {path})"
    return path


@pytest.fixture(scope="session", autouse=True)
def tl_cache_dir(tmp_path_factory) -> Path:
    """Decoded arrays and features go to a temp cache, inherited by subprocesses and Ray workers."""
    path = tmp_path_factory.mktemp("tl_cache")
    old = os.environ.get("TL_CACHE_DIR")
    os.environ["TL_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TL_CACHE_DIR", None)
    else:
        os.environ["TL_CACHE_DIR"] = old
