"""Datasets: find, validate and decode once into uint8 arrays that every trial shares.

Two formats: MedMNIST-style ``.npz`` files and ImageFolder trees. Both end as ``DatasetArrays``:
uint8 images (N, C, H, W) per split, int64 labels, class names and the split record, decoded
once per (dataset, image size) and cached on disk so trials never touch a JPEG.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from tl.errors import TLError
from tl.groups import GROUPS_CSV, group_split, groups_from_csv, groups_from_regex, groups_record
from tl.tasks import MEDMNIST, Task, medmnist_file, medmnist_md5, medmnist_url, resolve_task

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
@dataclass
class DatasetArrays:
    """Decoded splits: ``images[split]`` uint8 (N, C, H, W), ``labels[split]`` int64 (N,), or
    (N, K) multi-hot for a multilabel task. ``task`` (``tl.tasks.Task``) is resolved at load time
    from the task table, the labels, or TASK / POSITIVE_CLASS (see ``apply_task``)."""

    name: str
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: list[str]
    split_record: dict = field(default_factory=dict)
    fingerprint: str = ""  # identifies the source data; keys caches derived from it
    names: dict[str, list[str]] = field(default_factory=dict)  # per split: file paths / npz names, if known
    task_info: Task | None = None
    # split_fingerprint's results: computed once (on the driver for test and val) and shipped to trials
    _fingerprints: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def test_fingerprint(self) -> str:
        """Identity of the test split: two runs with equal fingerprints were tested on the same
        images in the same order. ImageFolder: the test file list and labels, so decoding at
        another image size is still the same split; npz: the test pixels, labels and names."""
        return self.split_fingerprint("test")

    def split_fingerprint(self, split: str) -> str:
        """Hash of one split's labels and file names, and its pixels unless it is an ImageFolder
        split with known files (so decoding at another image size is the same split); see
        ``test_fingerprint``."""
        if split in self._fingerprints:
            return self._fingerprints[split]
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.labels[split], dtype=np.int64).data)
        h.update("\n".join(self.names.get(split, [])).encode())
        if not (self.split_record.get("source") == "imagefolder" and self.names.get(split)):
            h.update(np.ascontiguousarray(self.images[split]).data)
        self._fingerprints[split] = h.hexdigest()[:16]
        return self._fingerprints[split]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def task(self) -> str:
        """binary, multiclass, multilabel or ordinal (``tl.tasks.TASKS``)."""
        if self.task_info is None:
            self.apply_task()
        return self.task_info.kind

    @property
    def positive_index(self) -> int | None:
        """Binary tasks: the index of the positive class (BreastMNIST: 0, malignant); else None."""
        if self.task_info is None:
            self.apply_task()
        return self.task_info.positive

    def apply_task(self, task: str | None = None, positive_class: str | None = None) -> "DatasetArrays":
        """Resolve the task: ``task``/``positive_class`` (TASK, POSITIVE_CLASS) over the table's over
        the labels'. Raises TLError when they do not fit the labels; returns self."""
        found = medmnist_file(self.name)
        row = MEDMNIST[found[0]] if found else None
        self.task_info = resolve_task(self.labels, self.class_names, row.task if row else None,
                                      row.positive if row else None, task, positive_class, where=self.name)
        return self

    @property
    def channels(self) -> int:
        return int(self.images["train"].shape[1])

    def describe(self) -> dict:
        return {"name": self.name, "task": self.task, "num_classes": self.num_classes,
                "class_names": self.class_names, "positive_class": self.positive_index,
                "split_sizes": {s: int(len(self.labels[s])) for s in SPLITS},
                "test_fingerprint": self.test_fingerprint, "split": self.split_record}


def default_data_dir() -> Path:
    """``$TL_DATA_DIR`` or the user cache folder: where named datasets are looked up."""
    env = os.environ.get("TL_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tl" / "data"


def cache_dir() -> Path:
    """Where decoded arrays live: ``$TL_CACHE_DIR`` or the user cache folder."""
    env = os.environ.get("TL_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tl"
    return base.expanduser()


def resolve_dataset_path(dataset: str, data_dir: str | Path | None = None, offline: bool = False) -> Path:
    """Turn a dataset name or path into an existing ``.npz`` file or ImageFolder root.

    A MedMNIST name (``pneumoniamnist``, ``pneumoniamnist_64``, …: ``tl.tasks.MEDMNIST``) is looked
    up as ``<data_dir>/<name>.npz`` and downloaded from MedMNIST's official URL (or
    ``$TL_MEDMNIST_URL``), MD5 checked, when missing and online.
    """
    path = Path(dataset).expanduser()
    if path.exists():
        return path
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    name = dataset.lower().removesuffix(".npz")
    local = data_dir / f"{name}.npz"
    if local.exists():
        return local
    if (data_dir / dataset).exists():
        return data_dir / dataset
    if medmnist_file(name) is None:
        raise TLError(f"dataset {dataset!r} not found: not a file or folder, and no {local}; "
                      f"known MedMNIST names: {', '.join(sorted(MEDMNIST))} (add _64, _128 or _224 for larger files)")
    if offline:
        raise TLError(f"dataset {name!r} is not in the data directory and --offline forbids "
                      f"downloading: put {name}.npz (MedMNIST, {medmnist_file(name)[1]} px) at {local}")
    return _download_medmnist(name, local)


def _download_medmnist(name: str, dest: Path) -> Path:
    """Fetch ``name`` into a ``.part`` file, check its MD5, then rename: no partial file ever lands.

    A cut-off transfer (fewer bytes than Content-Length) raises in urlretrieve; the part file is
    removed, so the next run starts over.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    url, expected = medmnist_url(name), medmnist_md5(name)
    with FileLock(str(dest) + ".lock"):  # parallel trials and drivers race for the same file
        if dest.exists():
            return dest
        tmp = dest.with_suffix(".part")
        try:
            urllib.request.urlretrieve(url, tmp)
        except (OSError, ValueError) as exc:  # URLError, ContentTooShortError, HTTPError are OSErrors
            tmp.unlink(missing_ok=True)
            raise TLError(f"could not download {name} from {url} ({exc}); "
                          f"put {name}.npz at {dest} by hand") from None
        md5 = hashlib.md5(tmp.read_bytes()).hexdigest()
        if md5 != expected:
            tmp.unlink(missing_ok=True)
            raise TLError(f"download of {name} from {url} is corrupt: MD5 {md5}, expected {expected}")
        tmp.rename(dest)
    return dest


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
        record["groups"] = groups_record({s: keys[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS)},
                                         f"regex {groups}", missed)
    return DatasetArrays(name, images, labels, list(class_names), record, names=names)


def _list_class_folder(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise TLError(f"{root}: no class folders (expected {root}/CLASS/*.jpeg)")
    files = {}
    for cls in classes:
        items = sorted(p for p in cls.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not items:
            raise TLError(f"{cls}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        files[cls.name] = items
    return files


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: returns (kept indices, carved-out indices), each sorted."""
    rng = np.random.default_rng(seed)
    carved = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        n = int(round(len(idx) * fraction))
        carved.extend(rng.permutation(idx)[:n].tolist())
    carved = np.array(sorted(carved), dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), carved)
    return kept, carved


def _decode_images(paths: list[Path], size: int, skip_bad: bool) -> tuple[np.ndarray, list[int], list[str]]:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    kept, bad = [], []
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im.load()
                arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            if not skip_bad:
                raise TLError(f"{p}: corrupt or truncated image ({exc}); pass --skip-bad-images to skip such files") from None
            bad.append(str(p))
            continue
        out[len(kept)] = arr.transpose(2, 0, 1)
        kept.append(i)
    return out[: len(kept)], kept, bad


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
        images[split], kept, bad = _decode_images(files[split], image_size, skip_bad)
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


def _fingerprint(path: Path) -> str:
    """Cheap content fingerprint: names, sizes and mtimes of every file under ``path``."""
    h = hashlib.sha256()
    items = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in items:
        st = p.stat()
        h.update(f"{p.relative_to(path.parent)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _groups_tag(groups: str | None) -> str:
    """Cache-key part of a grouping: a grouped carve must not reuse an ungrouped one's entry.

    A ``groups.csv`` is a file under the root, so the folder's fingerprint already covers it.
    """
    return f"-groups{hashlib.sha256(groups.encode()).hexdigest()[:10]}" if groups else ""


def load_dataset(dataset: str, image_size: int, data_dir: str | Path | None = None, *,
                 offline: bool = False, seed: int = 0, skip_bad: bool = False,
                 use_cache: bool = True, groups: str | None = None, task: str | None = None,
                 positive_class: str | None = None) -> DatasetArrays:
    """Load a dataset by name or path, decoded at ``image_size`` (ImageFolder) or native (npz).

    ``.npz`` images keep their stored size (the trainable resizes batches); ImageFolder JPEGs are
    decoded once at ``image_size`` and cached under ``cache_dir()`` keyed by a data fingerprint,
    the seed and the grouping (``groups``: regex over file paths, see :mod:`tl.groups`).
    ``task`` and ``positive_class`` (TASK, POSITIVE_CLASS) override the task table; TLError if
    they do not fit the labels.
    """
    arrays = _load_arrays(dataset, image_size, data_dir, offline, seed, skip_bad, use_cache, groups)
    return arrays.apply_task(task, positive_class)


def _load_arrays(dataset, image_size, data_dir, offline, seed, skip_bad, use_cache, groups) -> DatasetArrays:
    path = resolve_dataset_path(dataset, data_dir, offline)
    if path.is_file():
        arrays = load_npz_splits(path, groups)
        arrays.fingerprint = _fingerprint(path)
        return arrays
    key = (f"{path.name}-{_fingerprint(path)}-{image_size}px-seed{seed}{_groups_tag(groups)}"
           f"{'-skipbad' if skip_bad else ''}")
    cache = cache_dir() / "decoded" / f"{key}.npz"
    if use_cache and cache.exists():
        return _read_cache(cache, key)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        if use_cache and cache.exists():
            return _read_cache(cache, key)
        arrays = load_image_folder(path, image_size, seed=seed, skip_bad=skip_bad, groups=groups)
        arrays.fingerprint = key
        if use_cache:
            tmp = cache.with_suffix(".part.npz")
            np.savez(tmp, meta=np.array(json.dumps({"name": arrays.name, "class_names": arrays.class_names,
                                                    "split_record": arrays.split_record,
                                                    "names": arrays.names})),
                     **{f"{s}_images": arrays.images[s] for s in SPLITS},
                     **{f"{s}_labels": arrays.labels[s] for s in SPLITS})
            os.replace(tmp, cache)
    return arrays


def _read_cache(path: Path, key: str) -> DatasetArrays:
    with np.load(path) as npz:
        meta = json.loads(str(npz["meta"]))
        return DatasetArrays(meta["name"], {s: npz[f"{s}_images"] for s in SPLITS},
                             {s: npz[f"{s}_labels"] for s in SPLITS}, meta["class_names"],
                             meta["split_record"], key, names=meta.get("names", {}))
