"""R5: checkpoints and weight files are loaded with weights_only=True, so a pickle payload never runs."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tl.data import DatasetArrays
from tl.core.errors import TLError
from tl.train.trainable import run_epochs
from tl.train.weights import load_state_dict


class _Payload:
    """Unpickling this calls os.system: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_arrays() -> DatasetArrays:
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 255, (16, 1, 28, 28), dtype=np.uint8) for s in ("train", "val", "test")}
    labels = {s: np.arange(16) % 2 for s in ("train", "val", "test")}
    return DatasetArrays("tiny", images, labels, ["a", "b"])


def test_weights_file_with_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "weights.pt"
    torch.save({"model": _Payload(marker)}, bad)
    with pytest.raises(TLError, match="not a loadable state dict"):
        load_state_dict("convmodel", str(bad))
    assert not marker.exists(), "the pickle payload ran"


def test_checkpoint_with_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker)}, tmp_path / "state.pt")
    torch.save({}, tmp_path / "best_model.pt")
    with pytest.raises(pickle.UnpicklingError):
        next(run_epochs({"epochs": 2, "batch_size": 8}, _tiny_arrays(), None, checkpoint_dir=str(tmp_path)))
    assert not marker.exists(), "the pickle payload ran"
