"""Penultimate features of an exported model, and the covariate-shift files ``tl.export`` writes from them.

The features are what the classifier layer reads: a forward pre-hook on the backbone registry's
classifier Linear (``tl.train.models.get_classifier``) catches its input, so one rule serves timm
(``classifier``), torchvision (``fc``, ``classifier.1``, ``heads.head``) and the scratch models,
without knowing where each family pools or flattens. The pass is ``tl.train.inference``'s own
(same preprocessing, eval mode, precision), so the features are of the images the model scored.
An ensemble's features are its first member's: members may differ in width, and one member's view
of the images is enough to tell whether val and test look alike.

From them ``write_shift_files`` computes the val-vs-test classifier (``tl.core.shift``) and writes
``EXP/explain/shift_features.npz`` and ``shift.json`` (with the trials they are of, so the report
shows them only beside that model) and the bundle's ``reference_features.npz`` (val's features, that
new data can later be compared against).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tl.core.errors import TLError
from tl.core.results.files import EXPLAIN_DIR, SHIFT_FEATURES, SHIFT_RECORD
from tl.core.shift import DomainShift, domain_classifier
from tl.data.groups import groups_from_regex
from tl.train.inference import autocast_dtype, predict_logits
from tl.train.models import get_backbone, get_classifier
from tl.use.bundle import REFERENCE_FEATURES

SHIFT_SPLITS = ("val", "test")


def member_features(bundle, images: np.ndarray, member: int = 0, batch_size: int = 256) -> np.ndarray:
    """Float32 (N, D): the input of member ``member``'s classifier Linear for uint8 ``images``.

    Raises:
        TLError: the member's classifier is not a Linear (no penultimate layer to read).
    """
    images = bundle.check_channels(np.asarray(images))
    m = bundle.members[member]
    try:
        head = get_classifier(m.model, get_backbone(m.spec["backbone"]))
    except TypeError as exc:
        raise TLError(f"no penultimate features: {exc}") from None
    caught: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _mod, inputs: caught.append(inputs[0].flatten(1).float().cpu()))
    try:
        predict_logits(m.model, torch.from_numpy(images), m.batcher(bundle.device), bundle.device, batch_size,
                       autocast_dtype(m.spec.get("precision", "fp32")))
    finally:
        hook.remove()
    return torch.cat(caught).numpy() if caught else np.zeros((0, head.in_features), np.float32)


def split_groups(arrays, regex: str | None) -> dict[str, np.ndarray | None]:
    """Patient key of each val and test image, per split; None for a split whose patients are unknown.

    From the search's ``--groups`` regex over the recorded file names (both splits), else from the
    keys the loader kept (``DatasetArrays.groups``: carved splits of a grouped dataset; an official
    test folder has none, as Kermany's ids restart there).
    """
    kept = getattr(arrays, "groups", None) or {}
    out: dict[str, np.ndarray | None] = {}
    for s in SHIFT_SPLITS:
        names = arrays.names.get(s) or []
        found = None
        if regex and len(names) == len(arrays.labels[s]):
            try:
                found = groups_from_regex(names, regex)[0]
            except TLError:  # it matches none of this split's names: its patients are unknown
                found = None
        if found is not None:
            out[s] = found
        elif s in kept and len(kept[s]) == len(arrays.labels[s]):
            out[s] = np.asarray(kept[s])
        else:
            out[s] = None
    return out


def write_shift_files(bundle, arrays, regex: str | None, bundle_dir: Path, experiment: Path) -> DomainShift:
    """Features of val and test (the bundle's first member), the val-vs-test classifier on them, and
    the files: the bundle's ``reference_features.npz``, ``EXP/explain/shift_features.npz`` and
    ``shift.json`` (the classifier's AUC and interval, and the trials it is of)."""
    features = {s: member_features(bundle, arrays.images[s]) for s in SHIFT_SPLITS}
    groups = split_groups(arrays, regex)
    domain = domain_classifier(features["val"], features["test"], groups["val"], groups["test"])
    trials = list(bundle.meta["provenance"]["trials"])
    member = str(bundle.members[0].spec["trial"])
    labels = {s: np.asarray(arrays.labels[s]) for s in SHIFT_SPLITS}
    # val's patients too, when known: tl.evaluate's classifier then folds the reference by patient
    np.savez_compressed(bundle_dir / REFERENCE_FEATURES, features=features["val"].astype(np.float16),
                        labels=labels["val"], member=member,
                        **({"groups": groups["val"].astype(str)} if groups["val"] is not None else {}))
    explain = experiment / EXPLAIN_DIR
    explain.mkdir(exist_ok=True)
    np.savez_compressed(explain / SHIFT_FEATURES, val_features=features["val"].astype(np.float16),
                        test_features=features["test"].astype(np.float16), val_labels=labels["val"],
                        test_labels=labels["test"], trials=np.array(trials), member=member,
                        **{f"{s}_groups": groups[s].astype(str) for s in SHIFT_SPLITS if groups[s] is not None})
    (explain / SHIFT_RECORD).write_text(json.dumps(
        {"trials": trials, "member": member, "feature_dim": int(features["val"].shape[1]),
         "features": f"penultimate features (the classifier's input) of member {member}",
         "grouped_splits": [s for s in SHIFT_SPLITS if groups[s] is not None],
         **domain.as_record()}, indent=1))
    return domain
