"""Shared fixtures: the real data directory and an isolated decode/feature cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# ../shared/data beside the checkout, where CI and the dev machines keep the real data.
_DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_REQUIRED = ("pneumoniamnist.npz", "chest_xray/train/NORMAL", "chest_xray/train/PNEUMONIA",
             "chest_xray/test/NORMAL", "chest_xray/test/PNEUMONIA")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$TL_DATA_DIR``, else ``../shared/data`` beside the checkout (where CI puts it); fails if absent."""
    env = os.environ.get("TL_DATA_DIR")
    root = Path(env).expanduser() if env else _DEFAULT_DATA_DIR
    missing = [r for r in _REQUIRED if not (root / r).exists()]
    if missing:
        pytest.fail(f"real data missing under {root}: {', '.join(missing)}. Set TL_DATA_DIR to the folder "
                    "holding pneumoniamnist.npz and chest_xray/ (see ../shared/data/README.md)", pytrace=False)
    return root


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
