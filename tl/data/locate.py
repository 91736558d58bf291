"""Where datasets are: a path as given, or a MedMNIST name looked up in the data directory and
downloaded (MD5 checked, behind a file lock) when missing and online; and where caches go.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from filelock import FileLock

from tl.core.errors import TLError
from tl.core.tasks import MEDMNIST, medmnist_file, medmnist_md5, medmnist_url


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

    A MedMNIST name (``pneumoniamnist``, ``pneumoniamnist_64``, …: ``tl.core.tasks.MEDMNIST``) is looked
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


def relative_name(path: Path | str, root: Path | str) -> str:
    """A file's name as recorded: relative to the dataset's root (``../`` for a file beside it, as
    CheXpert's images sit beside its table's folder). A file under the root is a string cut, not
    ``os.path.relpath`` (a tenth of the time: 2 s saved at 10^5 files)."""
    text, base = str(path), str(root).rstrip(os.sep) + os.sep
    return text[len(base):] if text.startswith(base) and ".." not in text else os.path.relpath(text, root)
