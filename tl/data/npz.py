"""MedMNIST-layout ``.npz`` files: official splits, read as they are (nothing carved)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.core.tasks import MEDMNIST, medmnist_file
from tl.data.arrays import SPLITS, DatasetArrays
from tl.data.groups import groups_from_regex, groups_record


def load_npz_splits(path: Path, groups: str | None = None) -> DatasetArrays:
    """Read a MedMNIST-layout ``.npz``: ``{split}_images`` (N,H,W[,3]) and ``{split}_labels``.

    Its splits are official, so nothing is carved; ``groups`` (a regex over ``{split}_names``)
    only records which groups each split holds, for the split audit.
    """
    try:
        npz = np.load(path)
    except (OSError, ValueError) as exc:
        raise TLError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
    if missing:
        raise TLError(f"{path}: missing keys {', '.join(missing)} (has {', '.join(npz.files)})")
    images, labels = {}, {}
    for split in SPLITS:
        x, y = npz[f"{split}_images"], npz[f"{split}_labels"]
        y = y.reshape(len(y), -1)
        if len(x) != len(y):
            raise TLError(f"{path}: {split}_images has {len(x)} rows but {split}_labels has {len(y)}")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        else:
            raise TLError(f"{path}: {split}_images has shape {x.shape}; expected (N,H,W) or (N,H,W,3)")
        images[split] = np.ascontiguousarray(x.astype(np.uint8))
        labels[split] = (y if y.shape[1] > 1 else y[:, 0]).astype(np.int64)  # (N, K > 1): multi-hot
    name = path.stem.lower()
    widths = {labels[s].shape[1] if labels[s].ndim == 2 else 1 for s in SPLITS}
    if len(widths) > 1:
        raise TLError(f"{path}: the splits' labels have different widths {sorted(widths)}")
    found = medmnist_file(name)
    if "class_names" in npz.files:
        class_names = [str(c) for c in npz["class_names"]]
    elif found:
        class_names = list(MEDMNIST[found[0]].labels)
    elif labels["train"].ndim == 2:
        class_names = [str(i) for i in range(labels["train"].shape[1])]
    else:
        class_names = [str(i) for i in range(int(max(labels[s].max() for s in SPLITS)) + 1)]
    for split in SPLITS:
        if labels[split].ndim == 2:  # multi-hot: checked against the task (0/1 values) in apply_task
            if labels[split].shape[1] != len(class_names):
                raise TLError(f"{path}: {split}_labels has {labels[split].shape[1]} columns but "
                              f"{len(class_names)} class names")
            continue
        bad = (labels[split] < 0) | (labels[split] >= len(class_names))
        if bad.any():
            raise TLError(f"{path}: {split}_labels has {int(bad.sum())} labels outside "
                          f"[0, {len(class_names) - 1}] (e.g. {int(labels[split][bad][0])})")
    names = {s: [str(n) for n in npz[f"{s}_names"]] for s in SPLITS if f"{s}_names" in npz.files}
    record: dict = {"source": "npz official split"}
    if groups:
        if len(names) < len(SPLITS):
            raise TLError(f"{path}: --groups needs {{split}}_names arrays to match, and it has "
                          f"only {', '.join(npz.files)}")
        keys, missed = groups_from_regex([n for s in SPLITS for n in names[s]], groups)
        bounds = np.cumsum([0] + [len(names[s]) for s in SPLITS])
        per_split = {s: keys[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS)}
        record["groups"] = groups_record(per_split, f"regex {groups}", missed)
    return DatasetArrays(name, images, labels, list(class_names), record, names=names,
                         groups=per_split if groups else {})


