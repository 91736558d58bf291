"""The frozen-feature cache: a fixed-feature-extractor trial trains only its head on backbone
features computed once per (backbone, weights, input size, normalisation, data) and shared on disk
by every trial on the node (a file lock makes concurrent trials wait for the first one's pass).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from tl.data import DatasetArrays, cache_dir
from tl.train.models import get_classifier, set_classifier


def identity_batcher(features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return features


def _array_fingerprint(arrays: DatasetArrays) -> str:
    """The loader's fingerprint, or (arrays built by hand) a hash of the pixels and labels."""
    if arrays.fingerprint:
        return arrays.fingerprint
    h = hashlib.sha1()
    for split in ("train", "val", "test"):
        h.update(np.ascontiguousarray(arrays.images[split]).data)
        h.update(np.ascontiguousarray(arrays.labels[split]).data)
    return h.hexdigest()[:16]


def cached_features(model: nn.Module, spec, cfg: dict, arrays: DatasetArrays, split: dict, batcher,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """Frozen-backbone features per split, computed once per (backbone, weights, input size,
    normalisation, data fingerprint) and shared on disk by every trial on the node.

    Features come from un-augmented images: a fixed-feature-extractor trial trains its head
    without augmentation (set ``feature_cache=False`` to augment through the full network).
    """
    key = hashlib.sha1(json.dumps([cfg["backbone"], cfg["weights"], batcher.size, batcher.mean.flatten().tolist(),
                                   batcher.std.flatten().tolist(), _array_fingerprint(arrays)]).encode()).hexdigest()[:20]
    path = cache_dir() / "features" / f"{key}.npz"
    cv = arrays.split_record.get("cv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # concurrent trials wait for the first one's pass
        if not path.exists():
            head = get_classifier(model, spec)
            set_classifier(model, spec, nn.Identity())
            with torch.inference_mode():
                model.eval()
                feats = {s: torch.cat([model(batcher(images[i:i + 256].to(device))).float().cpu()
                                       for i in range(0, len(images), 256)]).numpy()
                         for s, (images, _) in split.items()}
            set_classifier(model, spec, head)
            tmp = path.with_suffix(".part.npz")
            np.savez(tmp, **(_unfold(feats, cv) if cv else feats))
            os.replace(tmp, path)
        with np.load(path) as npz:
            if cv:  # a fold: its train and val are rows of the pool (train then val) the file holds
                pool = np.concatenate([npz["train"], npz["val"]])
                return {"train": torch.from_numpy(pool[cv["train_rows"]]), "val": torch.from_numpy(pool[cv["val_rows"]]),
                        "test": torch.from_numpy(npz["test"])}
            return {s: torch.from_numpy(npz[s]) for s in split}


def _unfold(feats: dict[str, np.ndarray], cv: dict) -> dict[str, np.ndarray]:
    """A cross-validation fold's features put back in the source's splits (``tl.data.folds``): the
    cache file is the one any trial of the source computes, so all K folds (and the search's trials)
    share one pass over the images."""
    pool = np.empty((cv["n_pooled"], *feats["train"].shape[1:]), dtype=feats["train"].dtype)
    pool[cv["train_rows"]], pool[cv["val_rows"]] = feats["train"], feats["val"]
    return {"train": pool[:cv["n_train"]], "val": pool[cv["n_train"]:], "test": feats["test"]}
