"""ImageFolder trees (``root/{train,val,test}/CLASS/*`` or ``root/CLASS/*``): missing splits are
carved from train (stratified, seeded, disjoint by group when a grouping is given) and every file
is decoded once at the trial's image size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.data.arrays import SPLITS, DatasetArrays
from tl.data.carve import group_split, stratified_split
from tl.data.decode import IMAGE_EXTENSIONS, decode_images, is_image_file
from tl.data.groups import GROUPS_CSV, groups_from_csv, groups_from_regex, groups_record


def _list_class_folder(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise TLError(f"{root}: no class folders (expected {root}/CLASS/*.jpeg)")
    files = {}
    for cls in classes:
        items = sorted(p for p in cls.iterdir() if p.is_file() and is_image_file(p))
        if not items:
            raise TLError(f"{cls}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        files[cls.name] = items
    return files



def _train_groups(root: Path, files: dict[str, list[Path]], groups: str | None) -> tuple[np.ndarray | None, dict]:
    """Group keys of train's files (the pool val and test are carved from), and their source.

    Only train is grouped: ids may restart per split folder (Kermany's test/ does), so a name
    shared with an official split says nothing; pixels judge those leaks (the split audit).
    """
    rel = [str(p.relative_to(root)) for p in files["train"]]
    if groups:
        keys, missed = groups_from_regex(rel, groups)
        return keys, {"source": f"regex {groups}", "unmatched": missed}
    if (root / GROUPS_CSV).is_file():
        known = {str(p.relative_to(root)) for split in files.values() for p in split}
        return groups_from_csv(root / GROUPS_CSV, rel, known), {"source": GROUPS_CSV, "unmatched": 0}
    return None, {}


def load_image_folder(root: Path, image_size: int, val_fraction: float = 0.1,
                      test_fraction: float = 0.15, seed: int = 0, skip_bad: bool = False,
                      groups: str | None = None) -> DatasetArrays:
    """Read ``root/{train,val,test}/CLASS/*`` or bare ``root/CLASS/*`` and decode at ``image_size``.

    Missing val (or all splits) are carved from train, stratified and seeded; the record of what was
    carved (seed, fractions, file lists' hashes) goes in ``split_record``. With a grouping (regex
    ``groups`` over paths relative to ``root``, or ``root/groups.csv``) the carve is also disjoint
    by group, and the groups of each split are recorded.
    """
    present = [s for s in SPLITS if (root / s).is_dir()]
    if "train" in present:
        trees = {s: _list_class_folder(root / s) for s in present}
    else:
        trees = {"train": _list_class_folder(root)}
    class_names = sorted(trees["train"])
    for split, tree in trees.items():
        if sorted(tree) != class_names:
            raise TLError(f"{root}: classes differ between splits: train has {class_names}, "
                          f"{split} has {sorted(tree)}")
    record: dict = {"source": "imagefolder", "root": str(root), "seed": seed, "carved": {}}
    files = {s: [p for c in class_names for p in tree[c]] for s, tree in trees.items()}
    labels = {s: np.array([i for i, c in enumerate(class_names) for _ in tree[c]], dtype=np.int64)
              for s, tree in trees.items()}
    keys, grouping = _train_groups(root, files, groups)
    pool = {"train": keys} if keys is not None else {}
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split in trees:
            continue
        if keys is None:
            kept, carved = stratified_split(labels["train"], fraction, seed)
        else:
            kept, carved = group_split(labels["train"], pool["train"], fraction, seed)
            pool[split], pool["train"] = pool["train"][carved], pool["train"][kept]
        files[split] = [files["train"][i] for i in carved]
        labels[split] = labels["train"][carved]
        files["train"] = [files["train"][i] for i in kept]
        labels["train"] = labels["train"][kept]
        record["carved"][split] = {"fraction": fraction, "from": "train", "n": len(carved),
                                   "by": "label and group" if keys is not None else "label",
                                   "files": [str(p.relative_to(root)) for p in files[split]]}
    images, skipped = {}, {}
    for split in SPLITS:
        images[split], kept, bad = decode_images(files[split], image_size, skip_bad)
        labels[split] = labels[split][kept]
        files[split] = [files[split][i] for i in kept]
        if split in pool:
            pool[split] = pool[split][kept]
        if bad:
            skipped[split] = bad
    if pool:
        ordered = {s: pool[s] for s in SPLITS if s in pool}
        record["groups"] = groups_record(ordered, grouping["source"], grouping["unmatched"])
    if skipped:
        record["skipped_bad_images"] = skipped
        print(f"[tl.data] skipped {sum(map(len, skipped.values()))} unreadable images: "
              f"{', '.join(p for v in skipped.values() for p in v[:3])}")
    names = {s: [str(p.relative_to(root)) for p in files[s]] for s in SPLITS}
    return DatasetArrays(root.name, images, labels, class_names, record, names=names)


