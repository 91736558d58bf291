"""Bad input to ``python -m tl.search``: one line naming the cause, non-zero exit, no traceback,
and no experiment folder left behind that looks complete."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cli_cases import in_process, selected_params

ROOT = Path(__file__).resolve().parents[2]


def _search(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tl.search", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ.copy())


def _space(tmp: Path, body: str) -> Path:
    path = tmp / "space.py"
    path.write_text(body)
    return path


SMOKE = (ROOT / "search_spaces" / "smoke.py").read_text()


def _folder_with_bad_jpeg(tmp: Path, kind: str, data_dir: Path) -> Path:
    root = tmp / "imgs"
    src = sorted((data_dir / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:6]
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / "train" / cls).mkdir(parents=True)
        for i, f in enumerate(src):
            (root / "train" / cls / f"{i}.jpeg").write_bytes(f.read_bytes())
    bad = root / "train" / "PNEUMONIA" / "bad.jpeg"
    bad.write_bytes(os.urandom(500) if kind == "corrupt" else src[0].read_bytes()[:300])
    return root


CASES = {
    "missing data path": (lambda tmp, d: ["search_spaces/smoke.py", "--dataset", str(tmp / "nowhere")], "not found"),
    "unknown MedMNIST name offline": (lambda tmp, d: ["search_spaces/smoke.py", "--data-dir", str(tmp), "--offline"], "pneumoniamnist.npz"),
    "corrupt JPEG": (lambda tmp, d: ["search_spaces/smoke.py", "--dataset", str(_folder_with_bad_jpeg(tmp, "corrupt", d))], "bad.jpeg"),
    "truncated JPEG": (lambda tmp, d: ["search_spaces/smoke.py", "--dataset", str(_folder_with_bad_jpeg(tmp, "truncated", d))], "bad.jpeg"),
    "empty class folder": (lambda tmp, d: ["search_spaces/smoke.py", "--dataset", str(_empty_class(tmp))], "empty class folder"),
    "npz missing keys": (lambda tmp, d: ["search_spaces/smoke.py", "--dataset", str(_npz(tmp, drop="val_labels"))], "val_labels"),
    "labels out of range": (lambda tmp, d: ["search_spaces/smoke.py", "--dataset", str(_npz(tmp, bad_label=True))], "outside"),
    "space syntax error": (lambda tmp, d: [str(_space(tmp, "BACKBONES = {\n"))], "syntax error"),
    "unknown backbone": (lambda tmp, d: [str(_space(tmp, SMOKE.replace('"convmodel": ["none"]', '"resnet9000": ["none"]')))], "resnet9000"),
    "weights not valid for backbone": (lambda tmp, d: [str(_space(tmp, SMOKE.replace('"convmodel": ["none"]', '"resnet18": ["IMAGENET1K_V2"]')))], "IMAGENET1K_V2"),
    "negative lr": (lambda tmp, d: [str(_space(tmp, SMOKE.replace('("loguniform", 1e-4, 3e-2)', '("loguniform", -1e-4, 3e-2)')))], "lr"),
    "batch larger than dataset": (lambda tmp, d: ["search_spaces/smoke.py", "--dataset", str(_npz(tmp, n=20)), "--set", "batch_size=64"], "batch_size"),
    "unknown --set key": (lambda tmp, d: ["search_spaces/smoke.py", "--set", "lrr=0.1"], "lrr"),
    "unreachable --address": (lambda tmp, d: ["search_spaces/smoke.py", "--address", "127.0.0.1:9"], "--address"),
    "--finalists 0": (lambda tmp, d: ["search_spaces/smoke.py", "--finalists", "0"], "--finalists must be an integer >= 1"),
    "--finalists not an integer": (lambda tmp, d: ["search_spaces/smoke.py", "--finalists", "2.5"], "got '2.5'"),
    "--finalist-seeds 0": (lambda tmp, d: ["search_spaces/smoke.py", "--finalists", "2", "--finalist-seeds", "0"],
                           "--finalist-seeds must be an integer >= 1"),
    "FINALISTS 0 in the file": (lambda tmp, d: [str(_space(tmp, SMOKE + "FINALISTS = 0\n"))], "FINALISTS"),
}


def _empty_class(tmp: Path) -> Path:
    root = tmp / "empty"
    (root / "train" / "NORMAL").mkdir(parents=True)
    (root / "train" / "PNEUMONIA").mkdir(parents=True)
    return root


def _npz(tmp: Path, drop: str | None = None, bad_label: bool = False, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    if bad_label:
        arrays["val_labels"][3] = 7
    arrays.pop(drop, None)
    path = tmp / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    return path


# Refused after Ray has started (the files are decoded by Ray tasks): these run as real
# `python -m tl.search` processes, so Ray starts and stops as it would for a user.
AFTER_RAY_STARTS = {"corrupt JPEG", "truncated JPEG", "batch larger than dataset"}


@pytest.fixture(scope="module")
def ran(request, tmp_path_factory, small_data_dir) -> dict:
    """Every selected case's search: those refused after Ray starts as subprocesses two at a time
    (each ~9 s), the others meanwhile in this process. One fresh interpreter per case, one after
    another, took 90 s on 2 cores."""
    def args_for(case: str) -> tuple[Path, list[str]]:
        tmp = tmp_path_factory.mktemp("bad")
        args = CASES[case][0](tmp, small_data_dir)
        if "--data-dir" not in args:
            args += ["--data-dir", str(small_data_dir)]
        return tmp / "results", [*args, "--storage", str(tmp / "results"), "--name", "bad"]

    cases = selected_params(request, "test_bad_input_is_one_line_and_leaves_no_experiment", "case")
    prepared = {case: args_for(case) for case in cases}
    with ThreadPoolExecutor(max_workers=2) as pool:
        later = {case: pool.submit(_search, args) for case, (_, args) in prepared.items() if case in AFTER_RAY_STARTS}
        done = {case: in_process("tl.search", args) for case, (_, args) in prepared.items() if case not in AFTER_RAY_STARTS}
        done |= {case: future.result() for case, future in later.items()}
    return {case: (prepared[case][0], done[case]) for case in cases}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_leaves_no_experiment(case, ran):
    _, must_mention = CASES[case]
    storage, proc = ran[case]
    assert proc.returncode == 2, f"{case}: exit {proc.returncode}, the README promises 2\n{proc.stdout[-1500:]}"
    assert "Traceback" not in proc.stderr, f"{case}: traceback\n{proc.stderr[-2000:]}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"{case}: expected one 'error:' line, got {proc.stderr[-1500:]}"
    assert must_mention in errors[0], f"{case}: {errors[0]!r} does not name {must_mention!r}"
    assert not (storage / "bad").exists(), f"{case}: left an experiment folder behind"


def test_unwritable_storage_is_reported(tmp_path, small_data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    proc = _search(["search_spaces/smoke.py", "--data-dir", str(small_data_dir), "--storage", str(blocker / "results"),
                    "--name", "bad"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-1000:])
    assert "--storage" in proc.stderr and "not writable" in proc.stderr, proc.stderr[-1000:]


@pytest.mark.slow
def test_skip_bad_images_flag_names_how_many(tmp_path, small_data_dir):
    """The same corrupt folder that stops a search (CASES) runs with --skip-bad-images, which says how
    many files it left out and records them."""
    root = _folder_with_bad_jpeg(tmp_path, "corrupt", small_data_dir)
    storage = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--dataset", str(root),
                           "--skip-bad-images", "--num-samples", "1", "--max-epochs", "1", "--set", "batch_size=4",
                           "--set", "image_size=28", "--storage", str(storage), "--name", "skipped"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    assert "skipped 1 unreadable images" in proc.stdout and "bad.jpeg" in proc.stdout, proc.stdout[-2000:]
    meta = json.loads((storage / "skipped" / "tl_search.json").read_text())
    skipped = meta["dataset"]["split"]["skipped_bad_images"]
    assert [Path(p).name for files in skipped.values() for p in files] == ["bad.jpeg"], skipped
