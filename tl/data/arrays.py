"""``DatasetArrays``: decoded splits every trial shares, and what identifies them.

uint8 images (N, C, H, W) per split, int64 labels, class names, the split record and the task;
fingerprints of each split let paired comparisons and calibration check they saw the same images.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace

import numpy as np

from tl.core.tasks import MEDMNIST, Task, medmnist_file, resolve_task

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MappedFile:
    """A whole ``.npy`` file opened with ``np.load(mmap_mode="r")``, pickled as its path: every process
    that unpickles it maps the same file, so a node's processes share one copy in the page cache."""

    path: str

    @classmethod
    def of(cls, array: np.ndarray) -> "MappedFile | None":
        """The file ``array`` maps whole (a read-only memmap of all of a ``.npy``), else None."""
        if not (isinstance(array, np.memmap) and array.filename and array.mode == "r" and array.flags.c_contiguous):
            return None
        try:
            with open(array.filename, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                offset = f.tell()
        except (OSError, ValueError):
            return None
        whole = (tuple(shape) == array.shape and not fortran and dtype == array.dtype and array.offset == offset
                 and offset + array.nbytes == os.path.getsize(array.filename))
        return cls(array.filename) if whole else None

    def open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


@dataclass
class DatasetArrays:
    """Decoded splits: ``images[split]`` uint8 (N, C, H, W), ``labels[split]`` int64 (N,), or
    (N, K) multi-hot for a multilabel task. ``task`` (``tl.core.tasks.Task``) is resolved at load time
    from the task table, the labels, or TASK / POSITIVE_CLASS (see ``apply_task``)."""

    name: str
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: list[str]
    split_record: dict = field(default_factory=dict)
    fingerprint: str = ""  # identifies the source data; keys caches derived from it
    names: dict[str, list[str]] = field(default_factory=dict)  # per split: file paths / npz names, if known
    # per split the patient (group) key of each image, when a grouping is known: folds and bootstraps by patient
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    task_info: Task | None = None
    # per split the split audit's (dHash, pixel digest) of each image, when the decode store computed them
    image_fingerprints: dict | None = field(default=None, repr=False, compare=False)
    # split_fingerprint's results: computed once (on the driver for test and val) and shipped to trials
    _fingerprints: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        """Images that memory-map whole ``.npy`` files (the decode store's splits) pickle as their
        paths, a few hundred bytes, and reopen memory-mapped: trials on this machine share the page
        cache instead of each holding a copy. Valid only where the files are visible at the same
        path; ``by_value`` ships the pixels instead."""
        state = dict(self.__dict__)
        state["images"] = {s: MappedFile.of(x) or x for s, x in self.images.items()}
        state["image_fingerprints"] = None  # the driver's audit reads them; trials never do
        return state

    def __setstate__(self, state: dict) -> None:
        state["images"] = {s: x.open() if isinstance(x, MappedFile) else x for s, x in state["images"].items()}
        self.__dict__.update(state)

    def by_value(self) -> "DatasetArrays":
        """A copy whose images pickle as their pixels (for nodes that cannot see this disk): plain
        ndarray views of the memmaps, so nothing is copied until they are pickled."""
        copy = replace(self, images={s: np.asarray(x) for s, x in self.images.items()})
        copy._fingerprints = dict(self._fingerprints)
        return copy

    def without(self, rows: dict[str, np.ndarray], why: str) -> "DatasetArrays":
        """A copy with ``rows`` (indices per split) removed from those splits, recorded in the split
        record as ``dropped`` (``why``, and the count per split); the other splits are shared. The
        changed splits are held in memory and get new fingerprints."""
        rows = {s: np.asarray(r, dtype=np.int64) for s, r in rows.items() if len(r)}
        if not rows:
            return self
        keep = {s: np.setdiff1d(np.arange(len(self.labels[s])), r) for s, r in rows.items()}
        images, labels, names, groups = dict(self.images), dict(self.labels), dict(self.names), dict(self.groups)
        for s, k in keep.items():
            images[s], labels[s] = np.asarray(self.images[s])[k], np.asarray(self.labels[s])[k]
            if s in names:
                names[s] = [names[s][i] for i in k]
            if s in groups:
                groups[s] = np.asarray(groups[s])[k]
        marks = dict(self.image_fingerprints or {})
        for s, k in keep.items():
            if s in marks:
                marks[s] = tuple(np.asarray(m)[k] for m in marks[s])
        record = {**self.split_record, "dropped": {"why": why, **{s: int(len(r)) for s, r in rows.items()}}}
        copy = replace(self, images=images, labels=labels, names=names, groups=groups, split_record=record,
                       image_fingerprints=marks or self.image_fingerprints)
        copy._fingerprints = {s: f for s, f in self._fingerprints.items() if s not in rows}
        return copy

    @property
    def test_fingerprint(self) -> str:
        """Identity of the test split: two runs with equal fingerprints were tested on the same
        images in the same order. ImageFolder: the test file list and labels, so decoding at
        another image size is still the same split; npz: the test pixels, labels and names."""
        return self.split_fingerprint("test")

    def split_fingerprint(self, split: str) -> str:
        """Hash of one split's labels and file names, and its pixels unless it is an ImageFolder or
        label-table split with known files (so decoding at another image size, or at one channel
        instead of three, is the same split); see ``test_fingerprint``."""
        if split in self._fingerprints:
            return self._fingerprints[split]
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.labels[split], dtype=np.int64).data)
        h.update("\n".join(self.names.get(split, [])).encode())
        if not (self.split_record.get("source") in ("imagefolder", "label table") and self.names.get(split)):
            h.update(np.ascontiguousarray(self.images[split]).data)
        self._fingerprints[split] = h.hexdigest()[:16]
        return self._fingerprints[split]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def task(self) -> str:
        """binary, multiclass, multilabel or ordinal (``tl.core.tasks.TASKS``)."""
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
        """What ``tl_search.json`` records of the dataset: task, classes, split sizes and per-split label
        counts (positives and, for findings, uncertain labels), the test fingerprint and the split record."""
        return {"name": self.name, "task": self.task, "num_classes": self.num_classes,
                "class_names": self.class_names, "positive_class": self.positive_index,
                "split_sizes": {s: int(len(self.labels[s])) for s in SPLITS},
                "label_counts": label_counts(self.labels, self.class_names),
                "test_fingerprint": self.test_fingerprint, "split": self.split_record}


def label_counts(labels: dict[str, np.ndarray], class_names: list[str]) -> dict:
    """Per split, per class (or finding): positives, and for findings the uncertain (-1) labels too."""
    out = {}
    for split in sorted(labels, key=SPLITS.index):  # reading order, whatever the dict's
        y = np.asarray(labels[split])
        if y.ndim == 2:
            out[split] = {name: {"positive": int((y[:, k] == 1).sum()), "uncertain": int((y[:, k] == -1).sum()),
                                 "n": int(len(y))} for k, name in enumerate(class_names)}
        else:
            out[split] = {name: {"positive": int((y == k).sum()), "n": int(len(y))} for k, name in enumerate(class_names)}
    return out
