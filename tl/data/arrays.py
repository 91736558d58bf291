"""``DatasetArrays``: decoded splits every trial shares, and what identifies them.

uint8 images (N, C, H, W) per split, int64 labels, class names, the split record and the task;
fingerprints of each split let paired comparisons and calibration check they saw the same images.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace

import numpy as np

from tl.core.errors import TLError
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


# chunk file -> ((inode, mtime), its read-only memmap): one mapping of a chunk per process, shared by
# every split that reads it. A mapping per split would each gather the pages the kernel maps around
# a fault (other splits' rows of the same chunk), counting the store up to once per split in the RSS.
_MAPPED: dict[str, tuple[tuple[int, int], np.ndarray]] = {}


def _pixels(array: np.ndarray) -> np.ndarray:
    """What a ``ChunkRows.shipped()`` unpickles as: its pixels, already read."""
    return array


class ChunkRows:
    """A split's images as rows of the decode store's chunk files, not a copy of them.

    A carve is row indices over the store, so another seed or grouping writes no pixels (the store on
    disk stays the decoded size) and gathers nothing before its first trial. Reads: ``len``,
    ``shape``, ``dtype``, ``nbytes``; indexing (an int, a slice, an index or mask array, a CPU
    tensor) returns an ndarray gathered from the chunk files memory-mapped read-only, chunk by chunk
    in row order; ``np.asarray`` reads the whole split into memory. Pickled, it is the chunks' folder
    and the rows (8 bytes an image): every process of a node maps the same files, so trials share
    one copy of the pixels in the page cache and a trial's batches read it there, as they read the
    split files carves used to copy out (benchmarks.scale compares a trial's images/s on both).

    Args:
        chunks: the store's ``chunks-<C>`` folder; chunk ``i`` is ``<i:06d>.npy`` (``layout.chunk_file``)
            and holds rows ``i*C .. (i+1)*C - 1``.
        chunk: C, rows per chunk file.
        rows: each image's row in the store, in the split's order.
        channels: 1, or 3 when some chunk of the carve is colour (a grey chunk's channel is repeated).
        side: the decoded size S: images are uint8 (channels, S, S).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, chunks, chunk: int, rows: np.ndarray, channels: int, side: int, ship_pixels: bool = False):
        self.chunks, self.chunk, self.channels, self.side = str(chunks), int(chunk), int(channels), int(side)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.ship_pixels = ship_pixels
        self._maps: dict[int, np.ndarray] = {}  # chunk index -> its memmap (``_MAPPED``'s), found on first use

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.rows), self.channels, self.side, self.side

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"ChunkRows({len(self)} rows of {self.chunks}, shape {self.shape})"

    def _map(self, index: int) -> np.ndarray:
        if index not in self._maps:
            path = os.path.join(self.chunks, f"{index:06d}.npy")
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise TLError(f"the decode store's chunk {path} is gone (pruned while in use?); "
                              "load the dataset again") from None
            known = _MAPPED.get(path)
            if known is None or known[0] != (st.st_ino, st.st_mtime_ns):  # new, or the store made anew
                known = _MAPPED[path] = ((st.st_ino, st.st_mtime_ns), np.load(path, mmap_mode="r"))
            self._maps[index] = known[1]
        return self._maps[index]

    def take(self, positions) -> np.ndarray:
        """The images at ``positions`` (anything ``rows[positions]`` takes), a new uint8 array; each chunk
        is read once, its rows in ascending order."""
        rows = self.rows[positions]
        if rows.ndim == 0:
            return self.take(np.array([positions]))[0]
        out = np.empty((len(rows), self.channels, self.side, self.side), dtype=np.uint8)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        cuts = np.flatnonzero(np.diff(rows[order] // self.chunk)) + 1
        for part in np.split(order, cuts):  # the positions whose rows are in one chunk
            first = int(rows[part[0]]) // self.chunk
            out[part] = self._map(first)[rows[part] - first * self.chunk]  # (n, 1, S, S) broadcasts to 3 channels
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # images[i, c] or images[a:b, 0]: the rows first, then the rest
            head = self[key[0]]
            rest = key[1:] if np.ndim(key[0]) == 0 and not isinstance(key[0], slice) else (slice(None), *key[1:])
            return head[rest]
        if isinstance(key, slice):
            return self.take(np.arange(*key.indices(len(self))))
        key = key if isinstance(key, (int, np.integer)) else np.asarray(key)
        if isinstance(key, np.ndarray) and key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"a mask of shape {key.shape} for {len(self)} images")
            key = np.flatnonzero(key)
        return self.take(key)

    def __iter__(self):
        for start in range(0, len(self), 256):
            yield from self.take(np.arange(start, min(start + 256, len(self))))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype) -> np.ndarray:
        """The whole split in memory as ``dtype`` (as ``np.asarray(x).astype``, for callers written for arrays)."""
        return np.asarray(self, dtype=dtype)

    def reshape(self, *shape) -> np.ndarray:
        """The whole split in memory, reshaped (for callers written for arrays)."""
        return np.asarray(self).reshape(*shape)

    def subset(self, positions) -> "ChunkRows":
        """The images at ``positions`` as rows of the same chunks: a view, nothing read."""
        return ChunkRows(self.chunks, self.chunk, self.rows[positions], self.channels, self.side, self.ship_pixels)

    def joined(self, other: "ChunkRows") -> "ChunkRows | None":
        """This split's rows, then ``other``'s, as one view of the same chunks (nothing read); None when
        the two are not rows of one store at one shape."""
        layout = (self.chunks, self.chunk, self.channels, self.side)
        if layout != (other.chunks, other.chunk, other.channels, other.side):
            return None
        return ChunkRows(self.chunks, self.chunk, np.concatenate([self.rows, other.rows]), self.channels, self.side,
                         self.ship_pixels)

    def shipped(self) -> "ChunkRows":
        """The same rows, pickled as their pixels (read at pickling time) for a process that cannot see
        the store's disk; it unpickles as an ndarray."""
        return ChunkRows(self.chunks, self.chunk, self.rows, self.channels, self.side, ship_pixels=True)

    def __reduce__(self):
        if self.ship_pixels:
            return _pixels, (np.asarray(self),)
        return ChunkRows, (self.chunks, self.chunk, self.rows, self.channels, self.side)


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
        """Images that memory-map whole ``.npy`` files pickle as their paths, a few hundred bytes, and
        reopen memory-mapped; the decode store's splits (``ChunkRows``) as their chunks' folder and
        rows. Either way trials on this machine share the page cache instead of each holding a copy.
        Valid only where the files are visible at the same path; ``by_value`` ships the pixels instead."""
        state = dict(self.__dict__)
        state["images"] = {s: MappedFile.of(x) or x for s, x in self.images.items()}
        state["image_fingerprints"] = None  # the driver's audit reads them; trials never do
        return state

    def __setstate__(self, state: dict) -> None:
        state["images"] = {s: x.open() if isinstance(x, MappedFile) else x for s, x in state["images"].items()}
        self.__dict__.update(state)

    def by_value(self) -> "DatasetArrays":
        """A copy whose images pickle as their pixels (for nodes that cannot see this disk): plain
        ndarray views of the memmaps, or ``ChunkRows.shipped``, so nothing is read until they are pickled."""
        copy = replace(self, images={s: x.shipped() if isinstance(x, ChunkRows) else np.asarray(x)
                                     for s, x in self.images.items()})
        copy._fingerprints = dict(self._fingerprints)
        return copy

    def without(self, rows: dict[str, np.ndarray], why: str) -> "DatasetArrays":
        """A copy with ``rows`` (indices per split) removed from those splits, recorded in the split
        record as ``dropped`` (``why``, and the count per split); the other splits are shared. The
        changed splits get new fingerprints; they are held in memory, or stay rows of the store's
        chunks (``ChunkRows.subset``)."""
        rows = {s: np.asarray(r, dtype=np.int64) for s, r in rows.items() if len(r)}
        if not rows:
            return self
        keep = {s: np.setdiff1d(np.arange(len(self.labels[s])), r) for s, r in rows.items()}
        images, labels, names, groups = dict(self.images), dict(self.labels), dict(self.names), dict(self.groups)
        for s, k in keep.items():
            x = self.images[s]
            images[s] = x.subset(k) if isinstance(x, ChunkRows) else np.asarray(x)[k]
            labels[s] = np.asarray(self.labels[s])[k]
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
