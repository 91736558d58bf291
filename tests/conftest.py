"""Shared fixtures: the full real data, the small real fixtures in tests/fixtures, and an isolated
decode/feature cache."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# ../shared/data beside the checkout, where CI and the dev machines keep the real data.
_DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The full sets the data_dir tests read (../shared/data/README.md describes each).
_REQUIRED = ("pneumoniamnist.npz", "chestxray14_1000.npz", "chest_xray/train/NORMAL", "chest_xray/train/PNEUMONIA",
             "chest_xray/test/NORMAL", "chest_xray/test/PNEUMONIA", "nih_cxr14_1000/Data_Entry_2017.csv",
             "siim_acr_11/train-rle.csv", "kather2016_240/01_TUMOR")
# Small real subsets of those sets, committed, written by tests/fixtures/make_fixtures.py.
_SMALL_DATA_DIR = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The full real data: ``$TL_DATA_DIR``, else ``../shared/data`` beside the checkout.

    For tests that need a whole set (the README's exact counts, audits of the full splits). Without
    it they are skipped, unless ``TL_REQUIRE_FULL_DATA=1`` (CI), where its absence fails them.
    """
    env = os.environ.get("TL_DATA_DIR")
    root = Path(env).expanduser() if env else _DEFAULT_DATA_DIR
    missing = [r for r in _REQUIRED if not (root / r).exists()]
    if missing:
        what = "none of it" if len(missing) == len(_REQUIRED) else ", ".join(missing)
        message = (f"needs the full real data, missing under {root} ({what}): set TL_DATA_DIR to a folder holding "
                   "the sets of ../shared/data/README.md (sources: tests/fixtures/README.md)")
        if os.environ.get("TL_REQUIRE_FULL_DATA") == "1":
            pytest.fail(f"{message} [TL_REQUIRE_FULL_DATA=1]", pytrace=False)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def small_data_dir() -> Path:
    """tests/fixtures: a few hundred real images per set, in the full sets' layouts and file names
    (``pneumoniamnist.npz``, ``chest_xray/``; ``nih_cxr14_small/``, ``siim_acr_small/``,
    ``kather2016_small/``). Stands in for the data dir wherever a test needs real images, not a
    whole set; tests/fixtures/README.md names what each holds and where it comes from."""
    return _SMALL_DATA_DIR


@pytest.fixture(scope="session", autouse=True)
def tl_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Decoded arrays and features go to a temp cache, inherited by subprocesses and Ray workers."""
    path = tmp_path_factory.mktemp("tl_cache")
    old = os.environ.get("TL_CACHE_DIR")
    os.environ["TL_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TL_CACHE_DIR", None)
    else:
        os.environ["TL_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of CPU training tests: on 2 cores shared with other jobs,
    2 threads spin-wait (measured 8x slower). Use with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_experiment(tmp_path_factory: pytest.TempPathFactory, small_data_dir: Path) -> Path:
    """``python -m tl.search search_spaces/smoke.py --num-samples 4 --mlflow`` on tests/fixtures, run once
    for the end-to-end, report and MLflow tests; its stdout and stderr are saved beside the experiment,
    the MLflow store in ``mlruns`` there. Returns the experiment folder. Its users all live in
    tests/search/test_search_e2e.py: the suite runs a file's tests on one xdist worker, so a search
    two files used would run twice."""
    storage = tmp_path_factory.mktemp("results")
    proc = subprocess.run([sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(small_data_dir),
                           "--storage", str(storage), "--name", "smoke", "--num-samples", "4",
                           "--mlflow", str(storage / "mlruns")],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"search failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "best trial by val_acc" in proc.stdout, proc.stdout[-2000:]
    (storage / "search_stdout.txt").write_text(proc.stdout)
    (storage / "search_stderr.txt").write_text(proc.stderr)
    return storage / "smoke"
