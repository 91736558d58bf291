"""A synthetic image folder whose label lives in one region, and experiment folders built by hand.

The label is a bright square in the top-left quadrant (class ``pos``); everything else is noise
with the same statistics in both classes. So a model that learned the task must look top-left,
which is what the Grad-CAM test checks, and the export/predict tests get real PNG files to decode.
(With a distractor square elsewhere in both classes, Grad-CAM's channel weights light both
squares: position is decided after the feature map, which Grad-CAM cannot see.)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tl.data import load_dataset
from tl.train.trainable import run_epochs, save_checkpoint

SIZE = 32
REGION = (slice(0, 16), slice(0, 16))  # rows, cols of the informative quadrant


def _square(image: np.ndarray, rng: np.random.Generator, rows: tuple[int, int], cols: tuple[int, int]) -> None:
    r, c = rng.integers(*rows), rng.integers(*cols)
    image[r:r + 6, c:c + 6] = 230


def write_region_folder(root: Path, n_per_class: int = 120, seed: int = 0) -> Path:
    """``root/{neg,pos}/*.png``: 32 px gray noise; ``pos`` has a square inside the top-left quadrant."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in ("neg", "pos"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            image = rng.integers(20, 90, size=(SIZE, SIZE)).astype(np.uint8)
            if cls == "pos":
                _square(image, rng, (1, 10), (1, 10))
            Image.fromarray(image).save(root / cls / f"{cls}_{i:03d}.png")
    return root


def build_experiment(exp: Path, data: Path, configs: list[dict], untested: int = 0) -> dict:
    """Train each config with ``run_epochs`` (no Ray) and lay the results out as a search would.

    Returns ``{trial_id: last metrics}``. ``untested`` extra trials get one epoch of results and no
    test (as ASHA-stopped trials).
    """
    exp.mkdir(parents=True)
    torch.set_num_threads(1)
    arrays = load_dataset(str(data), SIZE, seed=0)
    (exp / "tl_search.json").write_text(json.dumps({"metric": "val_acc", "mode": "max", "max_epochs": 3,
                                                     "dataset": arrays.describe()}))
    out = {}
    for k, config in enumerate(configs):
        cfg = {"dataset": str(data), "image_size": SIZE, "backbone": "convmodel", "weights": "none",
               "augment": False, "batch_size": 32, **config}
        trial = f"{k:08x}"
        tdir = exp / f"{trial}_convmodel_none_none"
        tdir.mkdir()
        (tdir / "params.json").write_text(json.dumps(cfg))
        lines = []
        for epoch_metrics, state in run_epochs(cfg, arrays, None, device=torch.device("cpu")):
            lines.append(json.dumps({**epoch_metrics, "trial_id": trial, "training_iteration": epoch_metrics["epoch"]}))
            last = epoch_metrics
        ck = tdir / f"checkpoint_{len(lines) - 1:06d}"
        ck.mkdir()
        save_checkpoint(state, ck)
        for key in ("test_predictions", "val_predictions"):
            np.savez(tdir / f"{key}.npz", **state[key])
        (tdir / "result.json").write_text("\n".join(lines) + "\n")
        out[trial] = last
    for j in range(untested):
        trial = f"{len(configs) + j:08x}"
        tdir = exp / f"{trial}_convmodel_none_none"
        tdir.mkdir()
        (tdir / "params.json").write_text(json.dumps({"backbone": "convmodel", "epochs": 3}))
        (tdir / "result.json").write_text(json.dumps({"epoch": 1, "val_acc": 0.99, "val_loss": 0.1,
                                                      "trial_id": trial, "training_iteration": 1, "done": True}) + "\n")
    return out
