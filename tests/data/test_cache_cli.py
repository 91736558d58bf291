"""``python -m tl.cache list|prune`` on decode stores the tests make: what list shows, what each prune
option takes (age, a size budget least recently used first, all), --dry-run removing nothing, a
store another process uses left alone, and bad input as one error line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tl.data.decode import DECODER_VERSION
from tl.data.store import human_bytes, store_splits
from tl.data.store.admin import list_stores, main
from tl.data.store.layout import IN_USE, fill_lock, folder_bytes, release_in_use

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0


def _make_stores(small_data_dir: Path, cache: Path) -> dict[str, Path]:
    """Three small stores (real JPEGs from tests/fixtures): xray at 16 and 24 px, and another file set
    at 16 px; released by this process, so prune may take them."""
    normal = sorted((small_data_dir / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))
    root = small_data_dir / "chest_xray" / "train"
    made = {}
    for label, files, size in (("a16", normal[:6], 16), ("a24", normal[:6], 24), ("b16", normal[6:10], 16)):
        out = store_splits({"train": files[:-1], "val": files[-1:], "test": []}, root, size,
                           cache=cache / "decoded", name=label, workers=1, progress=False)
        release_in_use(out.store)
        made[label] = out.store
    return made


def _last_used(folder: Path, days_ago: float) -> None:
    stamp = time.time() - days_ago * DAY
    os.utime(folder / IN_USE, (stamp, stamp))


@pytest.fixture
def stores(small_data_dir: Path, tmp_path: Path) -> dict[str, Path]:
    made = _make_stores(small_data_dir, tmp_path / "cache")
    for label, days in (("a16", 10), ("a24", 3), ("b16", 0)):
        _last_used(made[label], days)
    return made


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_each_store_most_recently_used_first(stores, tmp_path, capsys):
    code, out, err = _run(capsys, "--cache-dir", str(tmp_path / "cache"), "list")
    assert code == 0 and not err, err
    rows = [line for line in out.splitlines() if line.startswith(("a16-", "a24-", "b16-"))]
    assert [r.split("-")[0] for r in rows] == ["b16", "a24", "a16"], out
    for row in rows:
        label = row.split("-")[0]
        cells = row.split()
        assert cells[1] == label and cells[2] == label[1:] and cells[3] == "1" and cells[4] == str(DECODER_VERSION), row
        assert cells[5] == ("4" if label == "b16" else "6"), f"images the store holds: {row}"
        assert human_bytes(folder_bytes(stores[label])) in row, row
    assert "(10 d ago)" in rows[2] and "(3 d ago)" in rows[1] and "in use" not in out, out
    assert out.splitlines()[-1] == f"3 stores, {human_bytes(sum(folder_bytes(p) for p in stores.values()))}", out


def test_prune_older_than_dry_run_shows_and_removes_nothing_then_removes(stores, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    code, out, _ = _run(capsys, "--cache-dir", cache, "prune", "--older-than", "5", "--dry-run")
    assert code == 0 and "would remove a16-" in out and "a24-" not in out, out
    assert all(p.is_dir() for p in stores.values()), "--dry-run removed a store"
    code, out, _ = _run(capsys, "--cache-dir", cache, "prune", "--older-than", "5")
    assert code == 0 and "removed a16-" in out, out
    assert not stores["a16"].exists() and stores["a24"].is_dir() and stores["b16"].is_dir()
    assert not list((tmp_path / "cache" / "decoded").glob(".*")), "nothing left aside"


def test_prune_max_size_drops_least_recently_used_until_under_budget(stores, tmp_path, capsys):
    sizes = {k: folder_bytes(p) for k, p in stores.items()}
    two_newest = sizes["b16"] + sizes["a24"]
    budget = f"{(two_newest + 0.5) / 1e9:.10f}"  # room for the two newest: only the oldest goes
    code, out, _ = _run(capsys, "--cache-dir", str(tmp_path / "cache"), "prune", "--max-size", budget)
    assert code == 0 and [p.exists() for p in stores.values()] == [False, True, True], out
    budget = f"{(two_newest - 0.5) / 1e9:.10f}"  # a byte short: the older of the two goes too
    code, out, _ = _run(capsys, "--cache-dir", str(tmp_path / "cache"), "prune", "--max-size", budget)
    assert code == 0 and [p.exists() for p in stores.values()] == [False, False, True], out
    assert f"{human_bytes(sizes['b16'])} left" in out, out


HOLDER = """
import sys
from pathlib import Path
from tl.data.store.layout import hold_in_use
assert hold_in_use(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


def test_a_store_another_process_uses_or_fills_is_kept(stores, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(stores["a16"])], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with fill_lock(stores["b16"]):  # a decode or a gather in progress
            code, out, _ = _run(capsys, "--cache-dir", cache, "list")
            assert code == 0 and out.count("in use") == 3 and "2 in use" in out, out  # 2 rows + the total
            code, out, _ = _run(capsys, "--cache-dir", cache, "prune", "--all")
        assert code == 0 and "kept (in use) a16-" in out and "kept (in use) b16-" in out and "removed a24-" in out, out
        assert stores["a16"].is_dir() and stores["b16"].is_dir() and not stores["a24"].exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    code, out, _ = _run(capsys, "--cache-dir", cache, "prune", "--all")
    assert code == 0 and not stores["a16"].exists() and not stores["b16"].exists(), "the holder has exited"


def test_gather_records_the_last_use_and_a_pruned_store_decodes_anew(stores, small_data_dir, tmp_path, capsys):
    _make_stores(small_data_dir, tmp_path / "cache")  # every store served again: nothing decoded, used now
    for label, folder in stores.items():
        assert time.time() - (folder / IN_USE).stat().st_mtime < 600, f"{label}: last use not recorded"
    (tmp_path / "cache" / "decoded" / ".x-1.pruned-99").mkdir()  # what an interrupted prune leaves
    assert _run(capsys, "--cache-dir", str(tmp_path / "cache"), "prune", "--all")[0] == 0
    assert not list((tmp_path / "cache" / "decoded").iterdir()), "every store and the leftover gone"
    again = _make_stores(small_data_dir, tmp_path / "cache")
    assert [p.name for p in again.values()] == [p.name for p in stores.values()]
    assert len(list_stores(tmp_path / "cache" / "decoded")) == 3


@pytest.mark.parametrize("argv, message", [
    (["prune"], "error: prune needs --older-than DAYS, --max-size GB or --all"),
    (["prune", "--older-than", "-1"], "error: --older-than must be a number >= 0, got -1.0"),
    (["prune", "--max-size", "nan"], "error: --max-size must be a number >= 0, got nan"),
    (["prune", "--max-size", "ten"], "error: argument --max-size: invalid float value: 'ten'"),
    (["--cache-dir", "no/such/folder", "list"], "error: --cache-dir no/such/folder is not a folder"),
    (["clean"], "error: argument {list,prune}: invalid choice: 'clean'"),
])
def test_bad_input_is_one_error_line_and_exit_2(stores, tmp_path, capsys, argv, message):
    before = sorted(p.name for p in (tmp_path / "cache" / "decoded").iterdir())
    if not argv[0].startswith("--"):
        argv = ["--cache-dir", str(tmp_path / "cache"), *argv]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code == 2 and not out.out, out
    assert out.err.startswith(message) and out.err.count("\n") == 1, out.err
    assert sorted(p.name for p in (tmp_path / "cache" / "decoded").iterdir()) == before, "nothing removed"


def test_the_door_runs_as_a_module(stores, tmp_path):
    env = {**os.environ, "TL_CACHE_DIR": str(tmp_path / "cache")}
    t0 = time.perf_counter()
    ok = subprocess.run([sys.executable, "-m", "tl.cache", "list"], env=env, cwd=ROOT, capture_output=True,
                        text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert ok.returncode == 0 and "3 stores" in ok.stdout, ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, "-m", "tl.cache", "prune"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, bad.stderr
    print(json.dumps({"list_seconds": seconds}))
