"""The task table: what each dataset asks (binary, multiclass, multilabel, ordinal), and what
follows from it — the loss, the metrics a split reports, the positive class of a binary task.

``MEDMNIST`` is MedMNIST v3's ``INFO`` for the 12 2D sets (medmnist/info.py, v3.0.2): task,
class or finding names, channels, and the official URL and MD5 of the 28, 64, 128 and 224 px
files. A file that is not in the table gets its task inferred from its labels; ``TASK`` and
``POSITIVE_CLASS`` in a space file override both. Nothing here imports torch or Ray, so a space
file and the analysis can be checked against it cheaply.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from tl.core.columns import split_metric
from tl.core.errors import TLError
# A multilabel finding the labeler could not decide (CheXpert's -1): masked out of every metric, and
# out of the loss unless the trial's ``uncertain`` policy maps it to 0 or 1 (tl.core.uncertain).
from tl.core.uncertain import UNCERTAIN

TASKS = ("binary", "multiclass", "multilabel", "ordinal")
MEDMNIST_SIZES = (28, 64, 128, 224)
# Zenodo record of MedMNIST v3; TL_MEDMNIST_URL replaces it (a mirror, or a test's local server).
MEDMNIST_BASE_URL = "https://zenodo.org/records/10519652/files"

# The val_* metrics each task reports, so METRIC can be checked before Ray starts. Per-finding
# AUCs of a multilabel task are reported too (val_auc_<finding>), but never drive a search.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("loss", "acc", "auc", "balanced_acc", "sensitivity", "specificity"),
    "multiclass": ("loss", "acc", "auc", "balanced_acc"),
    "ordinal": ("loss", "acc", "auc", "balanced_acc", "mae", "qwk"),
    "multilabel": ("loss", "auc", "map", "acc", "exact_match"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """One MedMNIST 2D set: task, class (finding) names, channels, positive class, MD5 per size."""

    task: str
    labels: tuple[str, ...]
    channels: int
    md5: dict  # image size -> MD5 of <flag>[_size].npz
    positive: str | None = None  # binary tasks: the class that sensitivity is about


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen")

MEDMNIST: dict[str, DatasetInfo] = {
    "pathmnist": DatasetInfo("multiclass", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium"), 3,
        {28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
         128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec"}),
    "chestmnist": DatasetInfo("multilabel", (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"), 1,
        {28: "02c8a6516a18b556561a56cbdd36c4a8", 64: "9de6cd0b934ebb5b7426cfba5efbae16",
         128: "db107e5590b27930b62dbaf558aebee3", 224: "45bd33e6f06c3e8cdb481c74a89152aa"}),
    "dermamnist": DatasetInfo("multiclass", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
        "vascular lesions"), 3,
        {28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
         128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d"}),
    "octmnist": DatasetInfo("multiclass", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), 1,
        {28: "c68d92d5b585d8d81f7112f81e2d0842", 64: "e229e9440236b774d9f0dfef9d07bdaf",
         128: "0a97e76651ace45c5d943ee3f65b63ae", 224: "abc493b6d529d5de7569faaef2773ba3"}),
    "pneumoniamnist": DatasetInfo("binary", ("normal", "pneumonia"), 1,
        {28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
         128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"},
        positive="pneumonia"),
    "retinamnist": DatasetInfo("ordinal", ("0", "1", "2", "3", "4"), 3,
        {28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
         128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348"}),
    # MedMNIST merges normal and benign into class 1: class 0, malignant, is the disease.
    "breastmnist": DatasetInfo("binary", ("malignant", "normal, benign"), 1,
        {28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
         128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"},
        positive="malignant"),
    "bloodmnist": DatasetInfo("multiclass", (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
        "monocyte", "neutrophil", "platelet"), 3,
        {28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
         128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601"}),
    "tissuemnist": DatasetInfo("multiclass", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb"), 1,
        {28: "ebe78ee8b05294063de985d821c1c34b", 64: "123ece2eba09d0aa5d698fda57103344",
         128: "61b955355d7425a89687b06cca3ce0c2", 224: "b077128c4a949f0a4eb01517f9037b9c"}),
    "organamnist": DatasetInfo("multiclass", _ORGANS, 1,
        {28: "68e3f8846a6bd62f0c9bf841c0d9eacc", 64: "2dcccc29b88e6da5a01161ef20cda288",
         128: "eeae80d0a227a8d099027e1b3cfd3b60", 224: "50747347e05c87dd3aaf92c49f9f3170"}),
    "organcmnist": DatasetInfo("multiclass", _ORGANS, 1,
        {28: "b9ceb9546e10131b32923c5bbeaea2b1", 64: "3ce34a8724ea6f548e6db4744d03b6a9",
         128: "773c1f009daa3fe5d9a2a201b2a7ed94", 224: "050f5e875dc056f6768abf94ec9995d1"}),
    "organsmnist": DatasetInfo("multiclass", _ORGANS, 1,
        {28: "9ab87b696fb54e2a387ebe992d6ed5f1", 64: "53a6d115339d874c25e309a994ff46d3",
         128: "ded0c5fa01a95dc4978b956f613e9b8e", 224: "b354719e553fbbb2513d5533f52a4cb1"}),
}


def medmnist_file(name: str) -> tuple[str, int] | None:
    """``pneumoniamnist_64`` -> ("pneumoniamnist", 64); ``pneumoniamnist`` -> (…, 28); None if unknown."""
    m = re.fullmatch(r"([a-z]+mnist)(?:_(\d+))?", name.lower())
    if not m or m.group(1) not in MEDMNIST:
        return None
    size = int(m.group(2) or 28)
    return (m.group(1), size) if size in MEDMNIST_SIZES else None


def medmnist_url(name: str) -> str:
    """The official URL of a table file, under ``$TL_MEDMNIST_URL`` when that is set."""
    base = os.environ.get("TL_MEDMNIST_URL", MEDMNIST_BASE_URL).rstrip("/")
    return f"{base}/{name}.npz?download=1"


def medmnist_md5(name: str) -> str:
    flag, size = medmnist_file(name)
    return MEDMNIST[flag].md5[size]


def infer_task(labels: np.ndarray, n_classes: int) -> str:
    """The task a file's labels imply: (N, K > 1) multi-hot -> multilabel; 2 classes -> binary."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        return "multilabel"
    return "binary" if n_classes == 2 else "multiclass"


@dataclass(frozen=True)
class Task:
    """A dataset's resolved task: its kind, class (finding) names and, if binary, the positive index."""

    kind: str
    class_names: tuple[str, ...]
    positive: int | None = None

    @property
    def positive_name(self) -> str | None:
        return None if self.positive is None else self.class_names[self.positive]


def resolve_task(labels: dict[str, np.ndarray], class_names: list[str], table_task: str | None = None,
                 table_positive: str | None = None, task: str | None = None,
                 positive_class: str | None = None, where: str = "dataset") -> Task:
    """Decide and check a dataset's task: ``task`` (TASK) over the table's over inference.

    Args:
        labels: per split, (N,) class indices or (N, K) multi-hot.
        class_names: names of the classes (or findings, for multi-hot labels).
        table_task, table_positive: the table row's task and positive class, if the file is in it.
        task, positive_class: the space file's TASK and POSITIVE_CLASS (class *name*), or None.
    Raises:
        TLError: unknown task, a task the labels do not fit, multi-hot labels other than 0/1,
        a positive class that is not a class name or given for a task other than binary.
    """
    if task is not None and task not in TASKS:
        raise TLError(f"{where}: TASK must be one of {', '.join(TASKS)}, got {task!r}")
    multi_hot = any(y.ndim == 2 and y.shape[1] > 1 for y in labels.values())
    kind = task or table_task or infer_task(next(iter(labels.values())), len(class_names))
    if multi_hot:
        bad = {s: y for s, y in labels.items() if not np.isin(y, (0, 1, UNCERTAIN)).all()}
        if bad:
            split, y = next(iter(bad.items()))
            odd = sorted(set(np.unique(y).tolist()) - {0, 1, UNCERTAIN})[:3]
            raise TLError(f"{where}: multi-label {split}_labels must be 0 or 1 (-1: uncertain), found {odd}")
        if kind != "multilabel":
            raise TLError(f"{where}: TASK {kind!r} does not fit multi-hot labels of shape "
                          f"{next(iter(labels.values())).shape}; use TASK = 'multilabel'")
    elif kind == "multilabel":
        raise TLError(f"{where}: TASK 'multilabel' needs labels of shape (N, K > 1) with 0/1 values; "
                      f"these are single labels with {len(class_names)} classes")
    if kind == "binary" and len(class_names) != 2:
        raise TLError(f"{where}: TASK 'binary' needs 2 classes, the labels have {len(class_names)}")
    if kind in ("multiclass", "ordinal") and len(class_names) < 2:
        raise TLError(f"{where}: TASK {kind!r} needs at least 2 classes, got {len(class_names)}")
    if positive_class is not None and kind != "binary":
        raise TLError(f"{where}: POSITIVE_CLASS applies to binary tasks only; this task is {kind}")
    positive = None
    if kind == "binary":
        name = positive_class if positive_class is not None else table_positive
        if name is None:
            positive = 1
        elif str(name) in [str(c) for c in class_names]:
            positive = [str(c) for c in class_names].index(str(name))
        else:
            raise TLError(f"{where}: POSITIVE_CLASS {name!r} is not a class name; classes: "
                          f"{', '.join(map(repr, class_names))}")
    return Task(kind, tuple(str(c) for c in class_names), positive)


def task_val_metrics(kind: str) -> list[str]:
    """The ``val_*`` metrics a task reports (what METRIC may name)."""
    return [split_metric("val", m) for m in TASK_METRICS[kind]]


def check_metric(metric: str, kind: str, where: str = "METRIC") -> None:
    """Raise TLError if a task does not report ``metric`` (e.g. val_qwk on a multilabel set)."""
    allowed = task_val_metrics(kind)
    if metric not in allowed:
        raise TLError(f"{where}: {metric} is not reported for a {kind} task; choose one of {', '.join(allowed)}")


ALL_VAL_METRICS = tuple(sorted({split_metric("val", m) for ms in TASK_METRICS.values() for m in ms}))
