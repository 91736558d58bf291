"""Subgroups of the test images: each test image's value per subgroup column, for the report's
per-subgroup figures (``tl.core.subgroups``). Subgroups never steer the search: nothing here reaches
a trial.

Where a subgroup column comes from (``--subgroup-columns COL[,COL...]``, SUBGROUP_COLUMNS):

1. a column of the label table, matched as the table's other columns are (surrounding spaces
   stripped, then case-insensitively when that is unambiguous);
2. else a DICOM header keyword (``PatientSex``, ``PatientAge``, ``ViewPosition``, or any keyword
   pydicom knows), read from each test image's header (``dcmread(stop_before_pixels=True)``); every
   image of the dataset must then be DICOM. An image folder of DICOM files has only these.

``--subgroup-path REGEX`` (SUBGROUP_PATH), for folders and tables alike: searched in each test image's
path as recorded (relative to the dataset's root, or the table's folder); each named group
(``(?P<source>bacteria|virus)``) is a column of that name, or without names the first group (else
the whole match) is the column ``path``.

Values are the stripped text; a blank cell, an absent header field and a path the regex does not
match are ``unknown``. Ages are binned into ``AGE_BANDS`` (0-17, 18-39, 40-59, 60-79, 80+ years): a
column whose name has the word age (``Age``, ``Patient Age``, ``PatientAge``), and DICOM's
``PatientAge`` (``045Y``; ``006M``, ``010W`` and ``003D`` count as months, weeks, days). Any other
column of numbers with more than ``MAX_LEVELS`` distinct values is cut into quartile bands of the
whole table's values (``[a, b)``, the last ``[a, b]``); with fewer, each value is a subgroup.

``plan_subgroups`` checks the columns and the regex before Ray starts (an unknown column is a
``TLError`` naming it and the table's columns) and reads the table once; ``subgroups_of_test`` gives the
test split's values, in its order, once the splits are carved.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tl.core.errors import TLError
from tl.core.subgroups import IMAGE_COLUMN, UNKNOWN
from tl.data.arrays import DatasetArrays
from tl.data.formats import is_dicom
from tl.data.label_table import find_column, finite_number, read_table, read_label_table
from tl.data.locate import relative_name, resolve_dataset_path
from tl.data.table_source import TableOptions, is_table

AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, math.inf, "80+"))
MAX_LEVELS = 8  # a numeric column with more distinct values than this is cut into quartile bands
DICOM_FIELDS = ("PatientSex", "PatientAge", "ViewPosition")  # the header fields the docs name
_DICOM_AGE = re.compile(r"^(\d{1,3})\s*([DWMY])?$", re.IGNORECASE)
_AGE_UNITS = {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


@dataclass
class SubgroupPlan:
    """What ``subgroups_of_test`` needs, checked before Ray starts (picklable, small)."""

    columns: list[str]  # output columns, in the order given (the regex's after the named ones)
    table_values: dict[str, dict[str, str]] = field(default_factory=dict)  # recorded name -> {column: value}
    dicom: list[str] = field(default_factory=list)  # header keywords, read from the test images
    pattern: str | None = None
    root: str = ""  # the folder the recorded names are relative to (DICOM headers are read there)
    record: dict = field(default_factory=dict)  # per column: source, bands or levels (tl_search.json)

    def describe(self) -> dict:
        """JSON-able, for ``tl_search.json``: the columns, each one's source and its subgroups in order."""
        return {"columns": list(self.columns), "sources": self.record}


def parse_columns(value) -> list[str]:
    """``"Sex,AP/PA,Age"`` or a list: the column names, stripped; an empty name is an error."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(c).strip() for c in items]
    if not names or any(not n for n in names):
        raise TLError(f"--subgroup-columns {value!r}: expected COL[,COL...], with no empty name")
    if len(set(names)) < len(names):
        raise TLError(f"--subgroup-columns {value!r}: a column is named twice")
    return names


def is_age(name: str) -> bool:
    """Whether a column name has the word age: ``Age``, ``Patient Age``, ``PatientAge``, ``age_years``
    (not ``Image``)."""
    return any(w.lower() == "age" for w in _WORDS.findall(name))


def age_band(years: float | None) -> str:
    """The ``AGE_BANDS`` label of an age in years; ``unknown`` for None, NaN or a negative age."""
    if years is None or not math.isfinite(years) or years < 0:
        return UNKNOWN
    return next(label for low, high, label in AGE_BANDS if low <= years < high)


def parse_age(text: str) -> float | None:
    """Years from ``58``, ``58.5`` or DICOM's ``058Y`` / ``006M`` / ``010W`` / ``003D``; None if neither."""
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    m = _DICOM_AGE.match(text)
    if not m:
        return None
    return int(m.group(1)) / _AGE_UNITS[(m.group(2) or "Y").upper()]


def _cut(values: list[str], column: str) -> tuple[list[str], dict]:
    """The subgroup of each cell of one table column, and how they were formed (rules: module docstring)."""
    present = [v for v in values if v]
    if is_age(column):
        ages = {v: parse_age(v) for v in set(present)}
        if present and all(a is not None for a in ages.values()):
            out = [age_band(ages[v]) if v else UNKNOWN for v in values]
            return out, {"bands": "age", "order": [b[2] for b in AGE_BANDS] + [UNKNOWN]}
    numbers = {v: finite_number(v) for v in set(present)}
    if present and all(x is not None for x in numbers.values()) and len(set(numbers.values())) > MAX_LEVELS:
        edges = np.unique(np.quantile([numbers[v] for v in present], [0, 0.25, 0.5, 0.75, 1.0]))
        labels = [f"[{a:g}, {b:g})" for a, b in zip(edges[:-2], edges[1:-1])] + [f"[{edges[-2]:g}, {edges[-1]:g}]"]

        def band(x: float) -> str:
            return labels[min(int(np.searchsorted(edges, x, side="right")) - 1, len(labels) - 1)]
        return ([band(numbers[v]) if v else UNKNOWN for v in values],
                {"bands": "quartiles", "edges": [float(e) for e in edges], "order": labels + [UNKNOWN]})
    if present and all(x is not None for x in numbers.values()):
        levels = sorted(set(present), key=lambda v: numbers[v])
    else:
        levels = sorted(set(present))
    return [v if v else UNKNOWN for v in values], {"bands": None, "order": levels + [UNKNOWN]}


def _check_pattern(pattern: str | None, taken: list[str]) -> list[str]:
    """The columns ``--subgroup-path`` adds; TLError for a bad regex or a name already taken."""
    if pattern is None:
        return []
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise TLError(f"--subgroup-path {pattern!r} is not a regular expression: {exc}") from None
    names = list(compiled.groupindex) or ["path"]
    clash = [n for n in names if n in taken or n == IMAGE_COLUMN]
    if clash:
        raise TLError(f"--subgroup-path {pattern!r}: column {clash[0]!r} is already a subgroup column; "
                      f"name the group otherwise ((?P<name>...))")
    return names


def _dicom_keyword(name: str) -> bool:
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(name) is not None


def _unknown_column(where: str, name: str, columns: list[str] | None, dicom: bool) -> TLError:
    have = f"its columns: {', '.join(repr(c) for c in columns)}" if columns is not None else "it has no columns"
    if _dicom_keyword(name) and not dicom:
        why = "a DICOM header keyword, but the images are not all DICOM"
    elif dicom:
        why = "nor a DICOM header keyword (such as " + ", ".join(DICOM_FIELDS) + ")"
    else:
        why = "DICOM header fields (" + ", ".join(DICOM_FIELDS) + ") need DICOM images"
    return TLError(f"--subgroup-columns: no column {name!r} in {where} ({why}); {have}; "
                   "or --subgroup-path REGEX for a part of each image's path")


def plan_subgroups(dataset: str, data_dir: str | Path | None = None, *, offline: bool = False,
                   table: dict | None = None, columns=None, pattern: str | None = None) -> SubgroupPlan | None:
    """Check ``columns`` (``--subgroup-columns``) and ``pattern`` (``--subgroup-path``) against the
    dataset, before Ray starts, and read the table's subgroup columns once. None when neither is given.

    Raises:
        TLError: a name that is neither a column of the table nor (with DICOM images) a header
            keyword; a DICOM keyword for images that are not DICOM; an ``.npz`` with columns; a bad
            regex, or one whose group name is also a column.
    """
    if columns is None and pattern is None:
        return None
    names = parse_columns(columns) if columns is not None else []
    if IMAGE_COLUMN in names:
        raise TLError(f"--subgroup-columns: {IMAGE_COLUMN!r} is reserved (the image column of the subgroups file)")
    added = _check_pattern(pattern, names)
    plan = SubgroupPlan(columns=names + added, pattern=pattern)
    plan.record.update({n: {"source": f"path regex {pattern}", "order": None} for n in added})
    if not names:
        return plan
    path = resolve_dataset_path(dataset, data_dir, offline)
    if is_table(path):
        _plan_table(plan, path, names, TableOptions.from_mapping(table))
    elif path.is_file():
        raise _unknown_column(f"{path.name} (an .npz file)", names[0], None, False)
    else:
        from tl.data.imagefolder import list_image_folder

        listing = list_image_folder(path)
        files = [f for split in listing.files.values() for f in split]
        dicom = bool(files) and all(is_dicom(f) for f in files)
        for name in names:
            if not (dicom and _dicom_keyword(name)):
                raise _unknown_column(f"the image folder {path}", name, None, dicom)
            plan.dicom.append(name)
            plan.record[name] = _dicom_record(name)
        plan.root = str(listing.root)
    return plan


def _dicom_record(name: str) -> dict:
    if name == "PatientAge" or is_age(name):
        return {"source": f"DICOM header {name}", "bands": "age", "order": [b[2] for b in AGE_BANDS] + [UNKNOWN]}
    return {"source": f"DICOM header {name}", "bands": None, "order": None}


def _plan_table(plan: SubgroupPlan, path: Path, names: list[str], options: TableOptions) -> None:
    """The table's values of each subgroup column per recorded image name; DICOM keywords for the rest."""
    header, cells, _ = read_table(path.expanduser().absolute())
    found = {n: find_column(n, header) for n in names}
    missing = [n for n, c in found.items() if c is None]
    if not options.labels:
        raise TLError(f"{path}: a label table needs --labels COL[,COL...] (LABELS in a space file)")
    read = read_label_table(path, path_column=options.path_column, labels=list(options.labels),
                            no_finding=options.no_finding, group_column=options.group_column,
                            split_column=options.split_column, image_root=options.image_root)
    if missing:
        dicom = bool(read.files) and all(is_dicom(f) for f in read.files)
        for name in missing:
            if not (dicom and _dicom_keyword(name)):
                raise _unknown_column(str(path), name, header, dicom)
    path_column = read.record["path_column"]["column"]
    first_row: dict[str, int] = {}
    for i, value in enumerate(cells[path_column]):
        first_row.setdefault(value, i)  # duplicate rows of one image were merged into the first
    rows = [first_row[n] for n in read.names]
    keys = [relative_name(f, path.parent) for f in read.files]  # as tl.data.listing records test names
    per_column = {}
    for name in names:
        if found[name] is None:
            plan.dicom.append(name)
            plan.record[name] = _dicom_record(name)
            continue
        column_cells = cells[found[name]]
        values, how = _cut(column_cells, found[name])
        per_column[name] = [values[r] for r in rows]
        plan.record[name] = {"source": f"table column {found[name]!r}", **how}
    plan.table_values = {key: {n: v[i] for n, v in per_column.items()} for i, key in enumerate(keys)}
    plan.root = str(path.parent)


def _dicom_value(ds, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return UNKNOWN
    from pydicom.multival import MultiValue

    text = ("\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)).strip()
    if not text:
        return UNKNOWN
    if keyword == "PatientAge" or is_age(keyword):
        return age_band(parse_age(text))
    return text


def _read_headers(files: list[str], keywords: list[str]) -> list[dict[str, str]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=list(keywords))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise TLError(f"{f}: unreadable DICOM header ({exc})") from None
        out.append({k: _dicom_value(ds, k) for k in keywords})
    return out


def subgroups_of_test(plan: SubgroupPlan, arrays: DatasetArrays) -> pd.DataFrame:
    """The test split's subgroups: ``IMAGE_COLUMN`` (the recorded name) and one column per subgroup
    column, one row per test image in the split's order (that of its predictions).

    Raises:
        TLError: the test images' names are unknown (an ``.npz`` without ``test_names`` and a regex),
            or a DICOM header is unreadable.
    """
    names = list(arrays.names.get("test") or [])
    n = len(arrays.labels["test"])
    if len(names) != n:
        raise TLError(f"{arrays.name}: the test images have no recorded names, so they have no subgroups")
    frame = pd.DataFrame({IMAGE_COLUMN: names})
    for column in plan.columns:
        if column in plan.record and plan.record[column]["source"].startswith("table column"):
            frame[column] = [plan.table_values.get(name, {}).get(column, UNKNOWN) for name in names]
    if plan.dicom:
        files = [os.path.normpath(os.path.join(plan.root, name)) for name in names]
        headers = _read_headers(files, plan.dicom)
        for keyword in plan.dicom:
            frame[keyword] = [h[keyword] for h in headers]
    if plan.pattern is not None:
        compiled = re.compile(plan.pattern)
        groups = list(compiled.groupindex) or ["path"]
        for group in groups:
            frame[group] = [_match(compiled, name.replace(os.sep, "/"), group) for name in names]
    return frame[[IMAGE_COLUMN, *plan.columns]]


def _match(compiled: re.Pattern, name: str, group: str) -> str:
    m = compiled.search(name)
    if m is None:
        return UNKNOWN
    if compiled.groupindex:
        value = m.group(group)
    else:
        value = m.group(1) if compiled.groups else m.group(0)
    return value.strip() if value and value.strip() else UNKNOWN
