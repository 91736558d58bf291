"""Label tables as real datasets ship them: a CSV or TSV with one row per image (or per mask).

``read_label_table`` turns such a table into a ``LabelTable``: one resolved image file per kept
row, labels as class indices or a multilabel matrix, and optional patient groups and official
splits, plus a JSON-able ``record`` of every choice it made. It decodes no pixels.

The path column (``path_column``; by default the first column whose first 20 values name image
files). A value is looked up, in this order:

1. relative to the table's folder (an absolute value: as written);
2. relative to the folder above it (CheXpert's ``Path`` values start with the release folder's
   own name, ``CheXpert-v1.0-small/train/...``, and ``train.csv`` sits inside that folder);
3. by file name, then by file stem, anywhere under ``image_root`` (default: the table's folder),
   e.g. NIH's ``images_00N/`` subfolders or SIIM's ``ImageId`` (a ``.dcm`` file's stem). A value
   with folders (``a/b.png``) must match the end of the file's path. The tree is walked once.

A value that matches no image file, or several by name or stem, is an error.

Labels (``labels``: a list of column names, or one string with commas):

- one column of class names: single-label, classes sorted (numerically when every value is a
  number; ``1`` and ``1.0`` are then one class, named ``1``). A blank cell is an error.
- one column of ``|``-joined findings (NIH's ``Finding Labels``; detected when any value holds a
  ``|``): multilabel over the findings seen, sorted. Values are split on ``|`` exactly, so
  ``Pleural_Thickening`` is never ``Thickening``. The ``no_finding`` text (default ``No Finding``,
  any case) means "no positive finding", not a class. A blank cell is all zeros, counted as blank.
- several columns, one finding each (CheXpert): values ``1`` / ``0`` / ``-1`` (uncertain) or blank,
  also ``1.0`` / ``0.0`` / ``-1.0``, ``true`` / ``false``, ``yes`` / ``no`` in any case. Blank is
  0, as the CheXpert labeler reads it, but counted apart. The trial's uncertain-label policy
  (``tl.core.uncertain``) decides what training makes of the ``-1`` cells.
- ``COLUMN!=VALUE`` or ``COLUMN==VALUE`` alone: binary, for tables that label with a mask or a
  code. SIIM-ACR's ``EncodedPixels!=-1`` gives classes ``["EncodedPixels==-1",
  "EncodedPixels!=-1"]``: index 1 is the positive, i.e. the comparison written. Cells compare as
  stripped text, or as numbers when both sides are numbers (``-1.0`` equals ``-1``). An empty VALUE
  (``x!=``) tests for a non-blank cell; with a non-empty VALUE a blank cell is an error.

Rows naming one image twice (SIIM and RSNA ship one row per mask or box) are merged when they agree
on label, group and split, and counted; rows that disagree are an error naming the image.

Groups (``group_column``): a column of patient (or ISIC lesion) ids; or, when it is not a column
and every image is DICOM, a header keyword (``PatientID``) read from each file. With no
``group_column`` and every image a DICOM file with a PatientID, that is the default group. A blank
group makes its row a group of its own (counted). Splits (``split_column``): ``train`` / ``val`` /
``test`` per row, also ``valid`` and ``validation``, in any case.

Column names match after stripping spaces (SIIM's `` EncodedPixels``), case-sensitively first,
then case-insensitively if that is unambiguous. NIH's header, which splits inside brackets
(``OriginalImage[Width``, ``Height]``), reads as it is. Every bad input raises ``TLError`` with one
line naming the cause.
"""
from __future__ import annotations

import csv
import os
import posixpath
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.data.formats import has_dicom_magic, has_image_suffix, is_dicom

SPLIT_VALUES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DETECT_ROWS = 20  # rows sampled per column when looking for the path column
_SHOWN = 3  # values named in an error before "and N more"
_COMPARE = re.compile(r"^(?P<column>.*?)(?P<op>!=|==)(?P<value>.*)$")
_TRUE_WORDS, _FALSE_WORDS = ("true", "yes"), ("false", "no")


@dataclass
class LabelTable:
    """A label table read and checked: one entry per kept row (duplicate rows merged)."""

    source: Path  # the table file
    files: list[Path]  # one resolved image file per kept row
    names: list[str]  # the path column's value per row, as written (surrounding spaces stripped)
    labels: np.ndarray  # (N,) int64 class index, or multilabel (N, K) int8 of 1 / 0 / -1 (uncertain)
    class_names: list[str]  # classes, or findings for multilabel
    multilabel: bool
    groups: np.ndarray | None  # object array: patient (or lesion) id per row
    splits: np.ndarray | None  # object array: "train" / "val" / "test" per row
    record: dict  # JSON-able: how the table was read (see read_label_table)


def read_label_table(path, *, path_column=None, labels=None, no_finding="No Finding", group_column=None,
                     split_column=None, image_root=None) -> LabelTable:
    """Read a ``.csv`` or ``.tsv`` label table and resolve its image files (rules: module docstring).

    Args:
        path: the table file.
        path_column: the column naming each image; default: detected.
        labels: label column names (a list, or one string with commas), or one ``COLUMN!=VALUE`` /
            ``COLUMN==VALUE``.
        no_finding: the text that means "no positive finding" in a ``|``-joined findings column.
        group_column: a column, or a DICOM header keyword, holding the patient (or lesion) id.
        split_column: a column holding the official split per row.
        image_root: where images are looked up by name or stem; default: the table's folder.

    Returns:
        A ``LabelTable``. Its ``record`` holds the table, the path column and how many values each
        lookup rule resolved, the label columns and parsing mode, per-finding (or per-class) counts,
        merged duplicate rows, the group source and the split source and counts.

    Raises:
        TLError: one line naming the cause (unreadable table, missing column, unmatched or
            ambiguous image, bad label value, disagreeing duplicates, unknown split, ...).
    """
    source = Path(path).expanduser().absolute()
    columns, cells, lines = read_table(source)
    root = Path(image_root).expanduser().absolute() if image_root is not None else source.parent
    if not root.is_dir():
        raise TLError(f"image root {root} is not a folder")
    resolver = _Resolver(source.parent, root)

    if path_column is None:
        path_col = _detect_path_column(source, columns, cells, resolver)
    else:
        path_col = _column(path_column, columns, source, "path column")
    names = cells[path_col]
    files, rules = _resolve(source, path_col, names, lines, resolver)

    label_items = _label_items(labels, columns, source)
    values, class_names, multilabel, blank, label_record = _parse_labels(source, label_items, columns, cells, lines,
                                                                        no_finding)
    group_col = None
    if group_column is not None and find_column(group_column, columns) is not None:
        group_col = _column(group_column, columns, source, "group column")
    row_groups = np.array(cells[group_col], dtype=object) if group_col else None
    split_col = _column(split_column, columns, source, "split column") if split_column is not None else None
    row_splits = _parse_splits(source, split_col, cells[split_col], lines) if split_col else None

    keep, merged, merged_into = _merge_duplicates(source, files, names, lines, values, class_names, multilabel,
                                     row_groups, row_splits)
    files = [Path(files[i]) for i in keep]
    names = [names[i] for i in keep]
    values, blank = values[keep], (blank[keep] if blank is not None else None)
    row_groups = row_groups[keep] if row_groups is not None else None
    row_splits = row_splits[keep] if row_splits is not None else None

    groups, group_record = _groups(source, group_column, group_col, row_groups, files, columns, names)
    label_record["counts"] = _label_counts(values, class_names, multilabel, blank)
    if multilabel:
        positives = (values == 1).sum(axis=1)
        label_record["rows_without_positive"] = int((positives == 0).sum())
        label_record["rows_with_2_or_more_positive"] = int((positives >= 2).sum())
    record = {
        "table": str(source),
        "format": source.suffix.lower().lstrip("."),
        "rows_read": len(lines),
        "rows_kept": len(files),
        "path_column": {"column": path_col, "chosen": "given" if path_column is not None else "detected",
                        "image_root": str(root), "resolved": rules},
        "labels": label_record,
        "duplicates": {"rows_merged": merged, "images_with_duplicates": merged_into},
        "groups": group_record,
        "splits": ({"source": f"column {split_col!r}", "counts": dict(sorted(Counter(row_splits.tolist()).items()))}
                   if row_splits is not None else {"source": None}),
    }
    return LabelTable(source=source, files=files, names=names, labels=values, class_names=class_names,
                      multilabel=multilabel, groups=groups, splits=row_splits, record=record)


# ----------------------------------------------------------------------------------------------
# the table itself


def read_table(path: Path) -> tuple[list[str], dict[str, list[str]], list[int]]:
    """Return the stripped column names, each column's stripped cells, and each row's file line."""
    delimiter = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
    if delimiter is None:
        raise TLError(f"{path}: a label table must be a .csv or .tsv file, got {path.suffix or 'no extension'!r}")
    if not path.is_file():
        raise TLError(f"label table {path} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if "".join(row).strip():
                    rows.append(row)
                    lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TLError(f"{path}: unreadable ({exc})") from None
    if header is None or not any(h.strip() for h in header):
        raise TLError(f"{path}: empty file, no header row")
    if not rows:
        raise TLError(f"{path}: the table has a header ({', '.join(h.strip() for h in header)}) but no rows")
    width = len(header)
    for row, line in zip(rows, lines):
        if len(row) > width and any(cell.strip() for cell in row[width:]):
            raise TLError(f"{path}: line {line} has {len(row)} fields, the header {width}")
    columns = [h.strip() for h in header]
    cells = {}
    for j, name in enumerate(columns):
        values = [row[j].strip() if j < len(row) else "" for row in rows]
        if not name and not any(values):
            continue  # a trailing delimiter in the header (NIH's original file has one)
        if name in cells:
            raise TLError(f"{path}: column {name!r} appears twice in the header")
        cells[name] = values
    return list(cells), cells, lines


def find_column(requested: str, columns: list[str]) -> str | None:
    want = requested.strip()
    exact = [c for c in columns if c == want]
    if len(exact) == 1:
        return exact[0]
    folded = [c for c in columns if c.lower() == want.lower()]
    return folded[0] if len(folded) == 1 else None


def _column(requested: str, columns: list[str], table: Path, what: str) -> str:
    found = find_column(str(requested), columns)
    if found is None:
        raise TLError(f"{table}: no {what} {str(requested).strip()!r}; the table's columns: {_listing(columns)}")
    return found


def _listing(columns: list[str]) -> str:
    return ", ".join(repr(c) for c in columns)


def _more(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


# ----------------------------------------------------------------------------------------------
# image files


def _is_image_path(path: str) -> bool:
    """A file with a known image extension (a string test: no ``Path``, no open, over 10^5 names),
    or an extensionless DICOM file."""
    return has_image_suffix(path) or has_dicom_magic(path)


class _Resolver:
    """Looks table values up as image files; walks ``root`` once into name, stem and path indexes."""

    def __init__(self, table_dir: Path, root: Path):
        self.table_dir = os.path.normpath(str(table_dir))
        self.parent_dir = os.path.dirname(self.table_dir)
        self.root = os.path.normpath(str(root))
        self._files: set[str] = set()
        self._by_name: dict[str, list[str]] = defaultdict(list)
        self._by_stem: dict[str, list[str]] = defaultdict(list)
        self._listings: dict[str, set[str]] = {}  # folders outside root, listed once each
        seen = set()
        for folder, dirs, filenames in os.walk(self.root, followlinks=True):
            try:
                st = os.stat(folder)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop
                dirs.clear()
                continue
            seen.add((st.st_dev, st.st_ino))
            for name in filenames:
                full = os.path.join(folder, name)
                if _is_image_path(full):
                    self._files.add(full)
                    self._by_name[name].append(full)
                    self._by_stem[os.path.splitext(name)[0]].append(full)

    def find(self, value: str) -> tuple[str, list[str]]:
        """Return the rule that matched and the matching files (none, one, or several by name/stem)."""
        v = value.replace("\\", "/").strip()
        if not v:
            return "", []
        for rule, base in (("table_folder", self.table_dir), ("folder_above", self.parent_dir)):
            candidate = os.path.normpath(os.path.join(base, v))
            if self._exists(candidate):
                return ("absolute" if os.path.isabs(v) else rule), [candidate]
        tail = posixpath.normpath(v)
        name = posixpath.basename(tail)
        rule, matches = "name", self._by_name.get(name, [])
        if not matches:
            rule, matches = "stem", self._by_stem.get(name, [])
        if "/" in tail and matches:  # a/b.png must be the end of the file's path
            suffix = os.sep + tail.replace("/", os.sep)
            if rule == "stem":
                matches = [m for m in matches if os.path.splitext(m)[0].endswith(suffix)]
            else:
                matches = [m for m in matches if m.endswith(suffix)]
        return rule, matches

    def _exists(self, candidate: str) -> bool:
        if candidate == self.root or candidate.startswith(self.root + os.sep):
            return candidate in self._files
        folder, name = os.path.split(candidate)
        listing = self._listings.get(folder)
        if listing is None:
            try:
                listing = {n for n in os.listdir(folder) if _is_image_path(os.path.join(folder, n))
                           and os.path.isfile(os.path.join(folder, n))}
            except OSError:
                listing = set()
            self._listings[folder] = listing
        return name in listing


def _detect_path_column(table: Path, columns: list[str], cells: dict[str, list[str]], resolver: _Resolver) -> str:
    for column in columns:
        sample = [v for v in cells[column][:DETECT_ROWS] if v]
        hits = sum(1 for v in sample if resolver.find(v)[1])
        if sample and 2 * hits >= len(sample):
            return column
    raise TLError(f"{table}: no column names image files in its first {DETECT_ROWS} rows (looked relative to "
                  f"{resolver.table_dir}, to {resolver.parent_dir}, and by name or stem under {resolver.root}); "
                  f"name it with path_column; the table's columns: {_listing(columns)}")


def _resolve(table: Path, column: str, values: list[str], lines: list[int],
             resolver: _Resolver) -> tuple[list[str], dict[str, int]]:
    files, counts, missing, ambiguous = [], Counter(), [], []
    for value, line in zip(values, lines):
        rule, matches = resolver.find(value)
        if len(matches) == 1:
            files.append(matches[0])
            counts[rule] += 1
        elif not matches:
            missing.append(f"{value!r} (line {line})")
        else:
            ambiguous.append(f"{value!r} ({len(matches)} files by {rule}: {', '.join(sorted(matches)[:2])}"
                             f"{', ...' if len(matches) > 2 else ''})")
    if missing:
        raise TLError(f"{table}: {len(missing)} value(s) of column {column!r} match no image file (looked relative "
                      f"to {resolver.table_dir}, to {resolver.parent_dir}, and by name or stem under "
                      f"{resolver.root}): {_more(missing)}")
    if ambiguous:
        raise TLError(f"{table}: {len(ambiguous)} value(s) of column {column!r} match several image files, "
                      f"pass image_root or a longer path: {_more(ambiguous)}")
    rules = {r: counts.get(r, 0) for r in ("table_folder", "folder_above", "absolute", "name", "stem")}
    return files, rules


# ----------------------------------------------------------------------------------------------
# labels


def _label_items(labels, columns: list[str], table: Path) -> list[str]:
    if labels is None:
        raise TLError(f"{table}: name the label column(s) with labels=...; the table's columns: {_listing(columns)}")
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    items = [str(i).strip() for i in items if str(i).strip()]
    if not items:
        raise TLError(f"{table}: labels names no column; the table's columns: {_listing(columns)}")
    if len(items) > 1 and any(_COMPARE.match(i) for i in items):
        raise TLError(f"{table}: a COLUMN!=VALUE or COLUMN==VALUE label stands alone, got {', '.join(items)}")
    return items


def finite_number(text: str) -> float | None:
    """A cell as a finite float, else None (text, blank, inf, nan)."""
    try:
        x = float(text)
    except ValueError:
        return None
    return x if np.isfinite(x) else None


def _parse_labels(table, items, columns, cells, lines, no_finding):
    """Return (labels, class names, multilabel, blank mask or None, record without counts)."""
    compare = _COMPARE.match(items[0]) if len(items) == 1 else None
    if compare:
        return _parse_compare(table, compare, columns, cells, lines)
    names = [_column(i, columns, table, "label column") for i in items]
    if len(names) > 1:
        return _parse_finding_columns(table, names, cells, lines)
    column = names[0]
    if any("|" in v for v in cells[column]):
        return _parse_joined(table, column, cells[column], lines, no_finding)
    return _parse_classes(table, column, cells[column], lines)


def _parse_compare(table, match, columns, cells, lines):
    column = _column(match["column"], columns, table, "label column")
    op, want = match["op"], match["value"].strip()
    want_number = finite_number(want)
    values = cells[column]
    if want:
        blank = [line for v, line in zip(values, lines) if not v]
        if blank:
            raise TLError(f"{table}: column {column!r} is blank on line {blank[0]} ({len(blank)} rows); "
                          f"{column}{op}{want} needs a value in every row (write {column}{op} to test for blank)")

    def equal(v: str) -> bool:
        if v == want:
            return True
        n = finite_number(v)
        return n is not None and want_number is not None and n == want_number

    same = {v: equal(v) for v in set(values)}
    hit = np.array([same[v] for v in values], dtype=bool)
    positive = hit if op == "==" else ~hit
    negative_op = "!=" if op == "==" else "=="
    class_names = [f"{column}{negative_op}{want}", f"{column}{op}{want}"]
    record = {"columns": [column], "mode": "compare", "expression": f"{column}{op}{want}", "positive": class_names[1]}
    return positive.astype(np.int64), class_names, False, None, record


def _parse_classes(table, column, values, lines):
    blank = [line for v, line in zip(values, lines) if not v]
    if blank:
        raise TLError(f"{table}: label column {column!r} is blank on line {blank[0]} ({len(blank)} rows); "
                      f"every row needs a class")
    unique = set(values)
    numbers = {v: finite_number(v) for v in unique}
    numeric = [v for v in unique if numbers[v] is not None]
    if numeric and len(numeric) < len(unique):
        _mixed(table, column, values, lines, numbers)
    if numeric:
        def canonical(x: float) -> str:
            return str(int(x)) if x.is_integer() else repr(x)
        by_value = sorted({numbers[v] for v in unique})
        class_names = [canonical(x) for x in by_value]
        index = {v: by_value.index(numbers[v]) for v in unique}
    else:
        class_names = sorted(unique)
        index = {v: class_names.index(v) for v in unique}
    labels = np.array([index[v] for v in values], dtype=np.int64)
    return labels, class_names, False, None, {"columns": [column], "mode": "classes"}


def _mixed(table, column, values, lines, numbers):
    """Raise for a column holding both numbers and free text, naming one of each."""
    first_number = next((v, line) for v, line in zip(values, lines) if v and numbers.get(v) is not None)
    first_text = next((v, line) for v, line in zip(values, lines) if v and numbers.get(v) is None)
    raise TLError(f"{table}: label column {column!r} mixes numbers and text: {first_number[0]!r} on line "
                  f"{first_number[1]}, {first_text[0]!r} on line {first_text[1]}")


def _parse_joined(table, column, values, lines, no_finding):
    none_text = no_finding.strip().lower()
    parsed, findings, blank_rows, no_finding_rows = [], set(), [], 0
    numbers_seen, text_seen = None, None
    for i, (value, line) in enumerate(zip(values, lines)):
        parts = [p.strip() for p in value.split("|")]
        parts = [p for p in parts if p]
        if not parts:
            blank_rows.append(i)
            parsed.append(())
            continue
        if any(p.lower() == none_text for p in parts):
            if len(parts) > 1:
                raise TLError(f"{table}: line {line} of {column!r} joins {no_finding!r} with findings: {value!r}")
            no_finding_rows += 1
            parsed.append(())
            continue
        for p in parts:
            if finite_number(p) is None:
                text_seen = text_seen or (p, line)
            else:
                numbers_seen = numbers_seen or (p, line)
        if numbers_seen and text_seen:
            raise TLError(f"{table}: label column {column!r} mixes numbers and text: {numbers_seen[0]!r} on line "
                          f"{numbers_seen[1]}, {text_seen[0]!r} on line {text_seen[1]}")
        parsed.append(tuple(parts))
        findings.update(parts)
    class_names = sorted(findings)
    index = {f: k for k, f in enumerate(class_names)}
    labels = np.zeros((len(values), len(class_names)), dtype=np.int8)
    for i, parts in enumerate(parsed):
        for p in parts:
            labels[i, index[p]] = 1
    blank = np.zeros(labels.shape, dtype=bool)
    blank[blank_rows] = True
    record = {"columns": [column], "mode": "joined", "separator": "|", "no_finding": no_finding,
              "no_finding_rows": no_finding_rows}
    return labels, class_names, True, blank, record


def _finding_value(text: str) -> int | None:
    """1 / 0 / -1 for an allowed finding cell, 2 for blank, None for anything else."""
    if not text:
        return 2
    n = finite_number(text)
    if n is not None:
        return int(n) if n in (1.0, 0.0, -1.0) else None
    word = text.lower()
    return 1 if word in _TRUE_WORDS else 0 if word in _FALSE_WORDS else None


def _parse_finding_columns(table, columns, cells, lines):
    if len(set(columns)) < len(columns):
        raise TLError(f"{table}: a label column is named twice: {', '.join(columns)}")
    labels = np.zeros((len(lines), len(columns)), dtype=np.int8)
    blank = np.zeros(labels.shape, dtype=bool)
    for k, column in enumerate(columns):
        values = cells[column]
        parsed = {v: _finding_value(v) for v in set(values)}
        bad = [v for v, p in parsed.items() if p is None]
        if bad:
            numbers = {v: finite_number(v) for v in parsed}
            words = [v for v in parsed if v and numbers[v] is None and _finding_value(v) is None]
            if words and any(numbers[v] is not None for v in parsed):
                _mixed(table, column, values, lines, numbers)
            line, value = next((line, v) for v, line in zip(values, lines) if parsed[v] is None)
            raise TLError(f"{table}: finding column {column!r} holds {value!r} on line {line}; a finding column holds "
                          f"1, 0, -1 or blank (also 1.0, 0.0, -1.0, true/false, yes/no)")
        column_values = np.array([parsed[v] for v in values], dtype=np.int8)
        blank[:, k] = column_values == 2
        labels[:, k] = np.where(column_values == 2, 0, column_values)
    return labels, list(columns), True, blank, {"columns": list(columns), "mode": "finding columns",
                                                 "blank_means": 0}


def _label_counts(values, class_names, multilabel, blank) -> dict:
    if not multilabel:
        counts = np.bincount(values, minlength=len(class_names))
        return {c: int(n) for c, n in zip(class_names, counts)}
    return {c: {"positive": int((values[:, k] == 1).sum()), "uncertain": int((values[:, k] == -1).sum()),
                "blank": int(blank[:, k].sum())} for k, c in enumerate(class_names)}


# ----------------------------------------------------------------------------------------------
# duplicates, groups, splits


def _describe(values, class_names, multilabel, i) -> str:
    if not multilabel:
        return class_names[values[i]]
    parts = [f"{c}={int(v)}" for c, v in zip(class_names, values[i]) if v != 0]
    return "|".join(parts) or "none"


def _merge_duplicates(table, files, names, lines, values, class_names, multilabel, groups, splits):
    """Return the rows to keep (first of each image), how many rows were merged into them, and into how many."""
    first: dict[str, int] = {}
    keep, merged, clashes, into = [], 0, [], set()
    for i, f in enumerate(files):
        j = first.setdefault(f, i)
        if j == i:
            keep.append(i)
            continue
        if not np.array_equal(values[i], values[j]):
            clashes.append(f"{names[i]!r} (lines {lines[j]} and {lines[i]}: "
                           f"{_describe(values, class_names, multilabel, j)} vs "
                           f"{_describe(values, class_names, multilabel, i)})")
        elif groups is not None and groups[i] != groups[j]:
            clashes.append(f"{names[i]!r} (lines {lines[j]} and {lines[i]}: group {groups[j]!r} vs {groups[i]!r})")
        elif splits is not None and splits[i] != splits[j]:
            clashes.append(f"{names[i]!r} (lines {lines[j]} and {lines[i]}: split {splits[j]} vs {splits[i]})")
        else:
            merged += 1
            into.add(j)
    if clashes:
        raise TLError(f"{table}: rows for the same image disagree, for {len(clashes)} row(s): {_more(clashes)}")
    return np.array(keep, dtype=np.int64), merged, len(into)


def _parse_splits(table, column, values, lines) -> np.ndarray:
    out = []
    for value, line in zip(values, lines):
        split = SPLIT_VALUES.get(value.lower())
        if split is None:
            raise TLError(f"{table}: split column {column!r} holds {value!r} on line {line}; allowed (any case): "
                          f"{', '.join(SPLIT_VALUES)}")
        out.append(split)
    return np.array(out, dtype=object)


def _dicom_values(files: list[Path], keyword: str) -> list[str]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=[keyword])
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise TLError(f"{f}: unreadable DICOM header ({exc})") from None
        value = ds.get(keyword)
        out.append("" if value is None else str(value).strip())
    return out


def _own_groups(values, names) -> tuple[np.ndarray, int]:
    """Blank ids become one group per row; return the groups and how many were blank."""
    groups = np.array([v if v else f"<no group: {n}>" for v, n in zip(values, names)], dtype=object)
    return groups, sum(1 for v in values if not v)


def _groups(table, requested, column, row_groups, files, columns, names) -> tuple[np.ndarray | None, dict]:
    if column is not None:
        groups, blank = _own_groups(row_groups.tolist(), names)
        return groups, {"source": f"column {column!r}", "n_groups": len(set(groups.tolist())), "blank_rows": blank}
    if requested is not None:
        from pydicom.datadict import tag_for_keyword

        keyword = str(requested).strip()
        dicom = all(is_dicom(f) for f in files)
        if tag_for_keyword(keyword) is None or not dicom:
            why = ("the images are not all DICOM, so it cannot come from their headers" if tag_for_keyword(keyword)
                   else "nor a DICOM header keyword")
            raise TLError(f"{table}: no group column {keyword!r} ({why}); the table's columns: {_listing(columns)}")
        groups, blank = _own_groups(_dicom_values(files, keyword), names)
        return groups, {"source": f"DICOM header {keyword}", "n_groups": len(set(groups.tolist())),
                        "blank_rows": blank}
    if not files or not all(is_dicom(f) for f in files):
        return None, {"source": None}
    ids = _dicom_values(files, "PatientID")
    missing = sum(1 for v in ids if not v)
    if missing:
        return None, {"source": None,
                      "note": f"{missing} of {len(ids)} DICOM files have no PatientID: no default groups"}
    groups = np.array(ids, dtype=object)
    return groups, {"source": "DICOM header PatientID (default: no group_column)",
                    "n_groups": len(set(ids)), "blank_rows": 0}
