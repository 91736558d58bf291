"""Label tables as datasets: ``--dataset TABLE.csv`` with the options a user gives on the command line
or in a space file (``TableOptions``), read by ``tl.data.label_table`` into a ``Listing``.

Official splits come from the split column; the missing ones are carved from train (by group when a
patient, lesion or DICOM ``PatientID`` is known). Patient ids in a table are global, so every split
is grouped and the split audit counts patients shared across official splits too. ``--groups REGEX``
keeps working: its first capture group over the table's path values (CheXpert's ``patientNNNNN``).
"""
from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.data.groups import groups_from_regex
from tl.data.listing import Listing
from tl.core.uncertain import UNCERTAIN_POLICIES
from tl.data.label_table import read_label_table

TABLE_SUFFIXES = (".csv", ".tsv")


@dataclass(frozen=True)
class TableOptions:
    """How to read a label table (each a CLI flag and a space-file key of the same meaning)."""

    labels: tuple[str, ...] | None = None  # LABELS / --labels COL[,COL...]
    path_column: str | None = None  # PATH_COLUMN / --path-column (default: detected)
    no_finding: str = "No Finding"  # NO_FINDING / --no-finding
    group_column: str | None = None  # GROUP_COLUMN / --group-column (a column, or a DICOM keyword)
    split_column: str | None = None  # SPLIT_COLUMN / --split-column
    image_root: str | None = None  # IMAGE_ROOT / --image-root (default: the table's folder)

    @classmethod
    def from_mapping(cls, values: dict | None) -> "TableOptions":
        """From a trial config's or space file's dict (None: the defaults); unknown keys are refused."""
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise TLError(f"unknown label-table option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(f.name for f in fields(cls))}")
        labels = values.get("labels")
        if isinstance(labels, str):
            labels = [s.strip() for s in labels.split(",") if s.strip()] if "!=" not in labels and "==" not in labels \
                else [labels]
        if labels is not None:
            values["labels"] = tuple(labels)
        return cls(**values)

    def as_dict(self) -> dict:
        """JSON-able, for trial configs and tl_search.json."""
        out = asdict(self)
        out["labels"] = list(self.labels) if self.labels is not None else None
        return out

    def key(self) -> str:
        """A short hash of the options, for cache keys."""
        return hashlib.sha256(repr(sorted(self.as_dict().items())).encode()).hexdigest()[:10]


def is_table(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TABLE_SUFFIXES


def list_label_table(path: Path, options: TableOptions, groups: str | None = None) -> Listing:
    """Read the table (``tl.data.label_table.read_label_table``) into a ``Listing``: files and labels per
    official split (all train without a split column), and each row's group.

    Raises:
        TLError: no ``labels`` given, or anything ``read_label_table`` refuses.
    """
    if not options.labels:
        raise TLError(f"{path}: a label table needs --labels COL[,COL...] (LABELS in a space file): the column "
                      "of class names, a column of |-joined findings, or one column per finding")
    table = read_label_table(path, path_column=options.path_column, labels=list(options.labels),
                             no_finding=options.no_finding, group_column=options.group_column,
                             split_column=options.split_column, image_root=options.image_root)
    keys, source, unmatched = table.groups, table.record.get("groups", {}).get("source", ""), 0
    if groups:  # --groups REGEX over the path values, as for folders
        keys, unmatched = groups_from_regex(table.names, groups)
        source = f"regex {groups}"
    splits = table.splits if table.splits is not None else np.full(len(table.files), "train", dtype=object)
    present = [s for s in ("train", "val", "test") if (splits == s).any()]
    if "train" not in present:
        raise TLError(f"{path}: the split column {options.split_column!r} names no train row")
    rows = {s: np.flatnonzero(splits == s) for s in present}
    listing = Listing(
        name=path.stem, root=path.parent,
        files={s: [table.files[i] for i in idx] for s, idx in rows.items()},
        labels={s: table.labels[idx] for s, idx in rows.items()},
        class_names=list(table.class_names),
        groups={s: np.asarray(keys, dtype=object)[idx] for s, idx in rows.items()} if keys is not None else None,
        group_source=source, unmatched=unmatched,
        record={"source": "label table", "table": table.record, "options": options.as_dict()})
    return listing


def table_fingerprint(path: Path, listing: Listing) -> str:
    """Content of the table and of every image it names (name, size, mtime): the decode cache's key."""
    h = hashlib.sha256(path.read_bytes())
    for split in sorted(listing.files):
        for file in listing.files[split]:
            st = file.stat()
            h.update(f"{split}:{file}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """The label-table flags, for every command that reads a dataset (tl.search, tl.audit)."""
    g = parser.add_argument_group("label tables (--dataset TABLE.csv or .tsv)")
    g.add_argument("--labels", metavar="COL[,COL...]",
                   help="label column(s): one column of class names (binary/multiclass), one column of |-joined "
                        "findings (multilabel, e.g. NIH 'Finding Labels'), several columns of 1/0/-1/blank "
                        "(CheXpert), or COL!=VALUE for a binary label (SIIM 'EncodedPixels!=-1')")
    g.add_argument("--path-column", metavar="COL", help="the column naming each image (default: detected)")
    g.add_argument("--no-finding", metavar="TEXT", help="in a |-joined column, the text meaning no finding "
                                                        "(default 'No Finding')")
    g.add_argument("--uncertain", choices=UNCERTAIN_POLICIES,
                   help="-1 labels: ignore (masked out of loss and metrics; default), zeros or ones (training labels)")
    g.add_argument("--group-column", metavar="COL", help="patient (or lesion) id column, or a DICOM header keyword "
                                                         "such as PatientID; carved splits become disjoint by it")
    g.add_argument("--split-column", metavar="COL", help="official split per row: train/val(id)/test")
    g.add_argument("--image-root", metavar="DIR", help="where image files are looked up by name or stem "
                                                       "(default: the table's folder)")


TABLE_FLAGS = ("labels", "path_column", "no_finding", "group_column", "split_column", "image_root")


def table_options_from_args(args: argparse.Namespace, base: dict | None = None) -> dict | None:
    """A space file's table options (``base``) with the flags given on top; None when neither says anything."""
    values = dict(base or {})
    for name in TABLE_FLAGS:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    if not values:
        return None
    if "image_root" in values and values["image_root"] is not None:
        values["image_root"] = os.path.abspath(os.path.expanduser(values["image_root"]))
    return TableOptions.from_mapping(values).as_dict()
