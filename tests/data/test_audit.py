"""tl.audit: cross-split duplicates counted against hand-made ones, group overlap, the
patient-id warning."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tl.data.audit import audit_lines, audit_splits, patient_id_warning
from tl.data.fingerprints import NEAR_THRESHOLD, dhash


def _smooth_images(n: int, seed: int) -> np.ndarray:
    """Distinct X-ray-like images: random 8x8 fields upsampled to 32 px, values in 20..230."""
    coarse = torch.from_numpy(np.random.default_rng(seed).uniform(20, 230, (n, 1, 8, 8))).float()
    return F.interpolate(coarse, size=(32, 32), mode="bilinear").round().byte().repeat(1, 3, 1, 1).numpy()


def _splits() -> dict[str, np.ndarray]:
    train, val, test = _smooth_images(60, 0), _smooth_images(20, 1), _smooth_images(20, 2)
    val[0] = train[5]                       # exact: train|val
    test[0], test[1] = train[1], train[2]   # exact: train|test, two images
    test[2] = train[2]                      # a third copy of train[2]: another pair, another image
    test[5] = np.clip(train[7].astype(int) + 3, 0, 255).astype(np.uint8)  # brighter: near, not exact
    return {"train": train, "val": val, "test": test}


def test_duplicates_across_splits_are_counted_exactly():
    record, pairs = audit_splits(_splits())
    assert record["exact_duplicates"] == {"train|val": 1, "train|test": 3, "val|test": 0}, record
    assert record["images_with_exact_duplicate"] == {"train|val": 1, "train|test": 3, "val|test": 0}
    assert record["near_duplicates"] == {"train|val": 0, "train|test": 1, "val|test": 0}, \
        "only the brightened copy is near; distinct images must not be"
    assert record["group_overlap"] is None, "no grouping: overlap unknown, not zero"
    assert pairs["thumb_a"].shape == (5, 64, 64) and pairs["exact"].tolist() == [True] * 4 + [False]
    assert set(pairs["pair"][:4].tolist()) == {"train|val", "train|test"}
    assert "train|test 3" in audit_lines(record)[0]
    # Issue 29: which images of val and test have a copy in train (exact or near), by index.
    assert record["copies_of_train"] == {"val": 1, "test": 4}
    assert pairs["train_copies_val"].tolist() == [0] and pairs["train_copies_test"].tolist() == [0, 1, 2, 5]


def test_distinct_images_are_far_apart_and_a_copy_is_at_zero():
    images = _smooth_images(50, 3)
    h = dhash(images)
    dist = np.bitwise_count(h[:, None, :] ^ h[None, :, :]).sum(-1)
    np.fill_diagonal(dist, 999)
    assert h.shape == (50, 4) and dist.min() > NEAR_THRESHOLD, f"closest distinct pair at {dist.min()} bits"


def test_group_overlap_counts_shared_patients():
    groups = {"source": "regex", "unmatched_files": 2, "splits": {
        "train": {"groups": ["p1", "p2", "p3"]}, "val": {"groups": ["p3", "p4"]}, "test": {"groups": ["p9"]}}}
    record, _ = audit_splits(_splits(), groups=groups)
    assert record["group_overlap"] == {"train|val": 1, "train|test": 0, "val|test": 0}
    assert "train|val 1" in audit_lines(record)[1] and "2 files matched no group" in audit_lines(record)[1]


def test_warning_when_names_carry_ids_and_no_grouping():
    kermany = {"train": ["train/PNEUMONIA/person12_virus_3.jpeg", "train/PNEUMONIA/person12_virus_5.jpeg",
                         "train/NORMAL/IM-0429-0001-0001.jpeg", "train/NORMAL/IM-0429-0001-0002.jpeg",
                         "train/NORMAL/IM-0115-0001.jpeg"]}
    warning = patient_id_warning(kermany)
    assert warning and "4 of 5 file names" in warning and "--groups" in warning, warning
    assert patient_id_warning({"train": [f"img_{i:04d}.png" for i in range(50)]}) is None, "a counter is no id"
    record, _ = audit_splits(_splits(), names={"train": kermany["train"]},
                             groups={"source": "regex", "splits": {"train": {"groups": ["a"]}}})
    assert record["warning"] is None, "no warning once a grouping is given"
