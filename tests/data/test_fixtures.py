"""tests/fixtures holds what tests/fixtures/make_fixtures.py writes from the full data, so every fixture is
a real image whose source tests/fixtures/README.md names."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SMALL = Path(__file__).resolve().parents[1] / "fixtures"


def _make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", SMALL / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixtures_are_what_make_fixtures_writes_from_the_full_data(data_dir: Path, tmp_path: Path):
    make = _make_fixtures()
    written = make.write_all(data_dir, tmp_path)
    assert len(written) > 100, f"only {len(written)} files written"
    diffs = make._differences(tmp_path, SMALL)
    assert not diffs, "tests/fixtures differs from what make_fixtures.py writes: " + "; ".join(diffs[:10])


def test_fixture_pneumoniamnist_rows_are_the_full_files_first_rows(data_dir: Path, small_data_dir: Path):
    """The trainable tests take the first rows of each split: the same images with or without the full data."""
    first = _make_fixtures().PNEUMONIA_FIRST
    with np.load(data_dir / "pneumoniamnist.npz") as full, np.load(small_data_dir / "pneumoniamnist.npz") as small:
        for split, n in first.items():
            assert np.array_equal(small[f"{split}_images"][:n], full[f"{split}_images"][:n]), split
            assert np.array_equal(small[f"{split}_labels"][:n], full[f"{split}_labels"][:n]), split


def test_fixtures_stay_small(small_data_dir: Path):
    total = sum(p.stat().st_size for p in small_data_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 2_000_000, f"tests/fixtures holds {total / 1e6:.2f} MB; keep the fixtures under 2 MB"
