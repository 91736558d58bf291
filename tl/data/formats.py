"""Which files are images, and which of them are DICOM: by extension, or by the ``DICM`` magic at
byte 128 for files named without one (DICOM files are often named by their SOP Instance UID,
``1.2.840....123``, or have no suffix at all). Every reader of image files asks here.
"""
from __future__ import annotations

import os
from pathlib import Path

DICOM_EXTENSIONS = (".dcm", ".dicom")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff") + DICOM_EXTENSIONS
_DICOM_MAGIC = (128, b"DICM")  # after the 128-byte preamble of a DICOM file (PS3.10 7.1)


def has_dicom_magic(path: str | Path) -> bool:
    offset, magic = _DICOM_MAGIC
    try:
        with open(path, "rb") as f:
            head = f.read(offset + len(magic))
    except OSError:
        return False
    return head[offset:] == magic


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` file, or one without a known image extension that carries the magic."""
    path = Path(path)
    suffix = path.suffix.lower()
    return suffix in DICOM_EXTENSIONS or (suffix not in IMAGE_EXTENSIONS and has_dicom_magic(path))


def is_image_file(path: str | Path) -> bool:
    """True for a file with a known image extension, or without one that is a DICOM file (magic)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS or has_dicom_magic(path)


def has_image_suffix(path: str) -> bool:
    """True when the name ends in a known image extension; a string test, no ``Path`` and no open
    (over a 10^5-file tree almost every name has one, and ``is_image_file`` may read the file)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
