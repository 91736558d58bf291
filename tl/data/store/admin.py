"""``python -m tl.cache list|prune``: the decode stores under ``cache_dir()/decoded`` (one per dataset,
image size, decoder and file set), what each holds and when a search last used it, and pruning them
by age, by a size budget (least recently used first) or all.

A store is pruned only when no process uses it: every process that gathered from it holds a shared
lock on its ``.in-use`` file until it exits (``hold_in_use``), and a fill or gather holds its
``.lock``; prune takes both without waiting and skips the store ("in use") when either is held. A
pruned store is renamed aside first, then deleted, so no search ever finds half of one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import Timeout

from tl.core.errors import TLError
from tl.data.locate import cache_dir
from tl.data.store.layout import IN_USE, STORE_META, fill_lock, folder_bytes, human_bytes

PRUNED = ".pruned-"  # a store renamed aside by prune, deleted next (a leftover is removed by the next prune)


@dataclass
class StoreInfo:
    """One store as ``list`` shows it."""

    folder: Path
    dataset: str  # the dataset's name ("" for a store opened without one)
    image_size: int
    channels: int | None  # 3 if any chunk is colour, else 1; None before any chunk is written
    decoder_version: int
    images: int  # files the store's key covers
    decoded: int  # of them, in the chunks written so far
    bytes: int
    last_use: float  # seconds since the epoch: .in-use's mtime, else the newest store or carve record
    in_use: bool


def _chunks_written(folder: Path) -> tuple[int, int | None]:
    """(images in the chunks whose record is written, their channels), from the ``.npy`` headers alone."""
    images, channels = 0, None
    for record in folder.glob("chunks-*/*.json"):
        try:
            with open(record.with_suffix(".npy"), "rb") as f:
                read = {(1, 0): np.lib.format.read_array_header_1_0}.get(np.lib.format.read_magic(f),
                                                                          np.lib.format.read_array_header_2_0)
                shape = read(f)[0]
        except (OSError, ValueError):
            continue
        images += shape[0]
        channels = max(channels or 0, shape[1])
    return images, channels


def _last_use(folder: Path) -> float:
    """``.in-use``'s mtime (touched by every gather); for a store no gather has touched, its newest record."""
    touched = folder / IN_USE
    if touched.exists() and touched.stat().st_mtime > 0:
        return touched.stat().st_mtime
    marks = [folder / STORE_META, *folder.glob("splits/*/meta.json")]
    return max((p.stat().st_mtime for p in marks if p.exists()), default=0.0)


def claim(folder: Path) -> ExitStack | None:
    """Both of the store's locks, taken without waiting (an ExitStack that releases them), or None when
    a process fills it, gathers from it or still uses it."""
    import fcntl

    stack = ExitStack()
    try:
        stack.enter_context(fill_lock(folder, timeout=0))
        existed = (folder / IN_USE).exists()
        fd = os.open(folder / IN_USE, os.O_RDWR | os.O_CREAT, 0o644)
        stack.callback(os.close, fd)
        if not existed:
            os.utime(fd, (0, 0))  # made here, not by a use: it must not count as the last use
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (Timeout, BlockingIOError):
        stack.close()
        return None
    return stack


def store_info(folder: Path) -> StoreInfo:
    """What ``folder`` (a store: it holds ``store.json``) holds, its size, last use and whether it is in use."""
    meta = json.loads((folder / STORE_META).read_text())
    last_use = _last_use(folder)
    held = claim(folder)
    if held is not None:
        held.close()
    decoded, channels = _chunks_written(folder)
    return StoreInfo(folder, meta.get("name", ""), int(meta["image_size"]), channels, int(meta["decoder_version"]),
                     int(meta["files"]), decoded, folder_bytes(folder), last_use, held is None)


def list_stores(root: Path) -> list[StoreInfo]:
    """Every store under ``root`` (``cache_dir()/decoded``), most recently used first."""
    if not root.is_dir():
        return []
    found = [store_info(p) for p in root.iterdir() if not p.name.startswith(".") and (p / STORE_META).is_file()]
    return sorted(found, key=lambda s: s.last_use, reverse=True)


def prune_plan(stores: list[StoreInfo], *, older_than_days: float | None = None, max_bytes: float | None = None,
               everything: bool = False, now: float | None = None) -> tuple[list[StoreInfo], list[StoreInfo]]:
    """Which stores a prune takes, least recently used first: every store with ``everything``; those
    unused for more than ``older_than_days``; then more, oldest first, until the rest fit in
    ``max_bytes`` (a store in use counts towards the budget, since it stays).

    Returns:
        (stores to remove, stores that would go but are in use and stay).
    """
    now = time.time() if now is None else now
    order = sorted(stores, key=lambda s: s.last_use)
    go = [s for s in order if everything or (older_than_days is not None and now - s.last_use > older_than_days * 86400)]
    if max_bytes is not None:
        left = sum(s.bytes for s in stores if s.in_use or s not in go)
        for s in order:
            if left <= max_bytes:
                break
            if s not in go:
                go.append(s)
                left -= 0 if s.in_use else s.bytes
    go.sort(key=lambda s: s.last_use)
    return [s for s in go if not s.in_use], [s for s in go if s.in_use]


def remove_store(folder: Path) -> bool:
    """Delete a store if no process uses it (renamed aside under both locks, then removed); whether it went."""
    held = claim(folder)
    if held is None:
        return False
    aside = folder.with_name(f".{folder.name}{PRUNED}{os.getpid()}")
    with held:
        os.replace(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def _row(s: StoreInfo, now: float, width: int = 34) -> str:
    images = f"{s.images:,}" if s.decoded == s.images else f"{s.decoded:,}/{s.images:,}"
    used = f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(s.last_use))} ({_age(now - s.last_use)})"
    return (f"{s.folder.name:<{width}} {s.dataset or '-':<16} {s.image_size:>5} {s.channels or '-':>3} "
            f"{s.decoder_version:>8} {images:>15} {human_bytes(s.bytes):>10}  {used}{'  in use' if s.in_use else ''}")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one ``error:`` line on stderr and exits 2."""

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def get_args_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tl.cache", description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", type=Path, help="the cache folder (default: $TL_CACHE_DIR, else ~/.cache/tl); "
                                                 "the stores are in its decoded/")
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,prune}")
    sub.add_parser("list", help="each store: dataset, image size, channels, decoder, images, size, last use")
    prune = sub.add_parser("prune", help="remove stores no process uses: by age, by a size budget, or all")
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="stores not used for more than DAYS days")
    prune.add_argument("--max-size", type=float, metavar="GB",
                       help="least recently used stores until the rest take at most GB (10^9 bytes)")
    prune.add_argument("--all", action="store_true", help="every store")
    prune.add_argument("--dry-run", action="store_true", help="show what would go; remove nothing")
    return p


def _check(args: argparse.Namespace) -> Path:
    """The stores' folder; TLError for options that cannot mean anything."""
    if args.cache_dir is not None and not args.cache_dir.is_dir():
        raise TLError(f"--cache-dir {args.cache_dir} is not a folder")
    if args.command == "prune":
        if args.older_than is None and args.max_size is None and not args.all:
            raise TLError("prune needs --older-than DAYS, --max-size GB or --all")
        for flag, value in (("--older-than", args.older_than), ("--max-size", args.max_size)):
            if value is not None and not (value >= 0 and np.isfinite(value)):
                raise TLError(f"{flag} must be a number >= 0, got {value}")
    return (args.cache_dir or cache_dir()) / "decoded"


def _list(root: Path, stores: list[StoreInfo], now: float) -> None:
    width = max([34, *(len(s.folder.name) for s in stores)])
    print(f"decode stores in {root}")
    print(f"{'store':<{width}} {'dataset':<16} {'size':>5} {'ch':>3} {'decoder':>8} {'images':>15} {'on disk':>10}  last use")
    for s in stores:
        print(_row(s, now, width))
    in_use = sum(s.in_use for s in stores)
    print(f"{len(stores)} store{'s' if len(stores) != 1 else ''}, {human_bytes(sum(s.bytes for s in stores))}"
          f"{f'; {in_use} in use' if in_use else ''}")


def _prune(root: Path, stores: list[StoreInfo], args: argparse.Namespace, now: float) -> None:
    for leftover in root.glob(f".*{PRUNED}*") if not args.dry_run else ():
        shutil.rmtree(leftover, ignore_errors=True)  # an interrupted prune's store, already renamed aside
    go, busy = prune_plan(stores, older_than_days=args.older_than, everything=args.all, now=now,
                          max_bytes=None if args.max_size is None else args.max_size * 1e9)
    freed, verb = 0, "would remove" if args.dry_run else "removed"
    width = max([34, *(len(s.folder.name) for s in stores)])
    for s in go:
        if not args.dry_run and not remove_store(s.folder):
            busy.append(s)  # taken into use since it was listed
            continue
        freed += s.bytes
        print(f"{verb} {_row(s, now, width)}")
    for s in busy:
        print(f"kept (in use) {_row(s, now, width)}")
    gone = len(go) - sum(s in busy for s in go)
    left = sum(s.bytes for s in stores) - freed
    print(f"{verb} {gone} store{'s' if gone != 1 else ''}, {human_bytes(freed)}; {len(busy)} in use kept; "
          f"{human_bytes(left)} left in {root}")


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        root = _check(args)
        now = time.time()
        stores = list_stores(root)
        if args.command == "list":
            _list(root, stores, now)
        else:
            _prune(root, stores, args, now)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
