"""Issue 25 end to end: a search whose finalist stage cross-validates (--cv 5), killed mid-stage and
resumed; its out-of-fold ranking in finalists.csv; its fold ensemble exported and reproduced from PNGs."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cli_cases import in_process
from trial_rows import read_rows, trained_rows

pytestmark = pytest.mark.slow  # starts Ray searches

ROOT = Path(__file__).resolve().parents[2]
K = 5
# A grid of two recipes (batch size 64 and 128), one epoch each: the stage is 2 recipes x 5 folds.
ARGS = ["-m", "tl.search", "search_spaces/smoke.py", "--sampler", "grid", "--set", "lr=0.01",
        "--set", "epochs=1", "--max-epochs", "1", "--grace-period", "1", "--finalists", "2", "--cv", str(K), "--name", "cv"]


def _fold_dirs(exp: Path) -> list[Path]:
    return sorted(p.parent for p in (exp / "finalists").glob("*/params.json"))


@pytest.fixture(scope="module")
def cv_experiment(tmp_path_factory, small_data_dir) -> dict:
    """The search, SIGKILLed once a fold trial has finished, then resumed to the end."""
    storage = tmp_path_factory.mktemp("cv")
    cmd = [sys.executable, *ARGS, "--data-dir", str(small_data_dir), "--storage", str(storage)]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    exp, deadline = storage / "cv", time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if any(read_rows(d) and "test_acc" in read_rows(d)[-1] for d in _fold_dirs(exp)):
            break
        time.sleep(0.3)
    assert driver.poll() is None, "the search ended before it could be killed mid-stage"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    before = {d.name: read_rows(d) for d in _fold_dirs(exp)}
    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    return {"exp": exp, "before": before, "stdout": resumed.stdout, "storage": storage, "data": small_data_dir}


def test_resumed_stage_runs_each_fold_once_and_the_folds_partition_train_and_val(cv_experiment):
    exp = cv_experiment["exp"]
    dirs = _fold_dirs(exp)
    params = [json.loads((d / "params.json").read_text()) for d in dirs]
    assert len(params) == 2 * K and {p["cv_k"] for p in params} == {K}
    for recipe in (1, 2):
        assert sorted(p["cv_fold"] for p in params if p["recipe_id"] == recipe) == list(range(K))
    finished = {n for n, rows in cv_experiment["before"].items() if rows and "test_acc" in rows[-1]}
    assert finished and len(finished) < 2 * K, "the kill must fall between the first and the last fold"
    for d in dirs:
        rows = trained_rows(read_rows(d))
        assert [r["epoch"] for r in rows] == [1], f"{d.name}: {[r['epoch'] for r in rows]}: a fold ran twice or never"
        if d.name in finished:  # its measured figures (epoch time included) stay: it did not train again
            assert rows == trained_rows(cv_experiment["before"][d.name]), f"{d.name} finished before the kill but changed"
    meta = json.loads((exp / "tl_search.json").read_text())
    sizes = meta["dataset"]["split_sizes"]
    for recipe in (1, 2):
        rows = [np.load(d / "val_predictions.npz")["rows"] for d, p in zip(dirs, params) if p["recipe_id"] == recipe]
        assert sorted(np.concatenate(rows).tolist()) == list(range(sizes["train"] + sizes["val"])), \
            "out-of-fold predictions cover each train + val image exactly once"
    tests = [np.load(d / "test_predictions.npz")["labels"] for d in dirs]
    assert all(len(t) == sizes["test"] for t in tests), "every fold model is tested on the whole test split"
    assert meta["finalists"]["cv"]["n_pooled"] == sizes["train"] + sizes["val"]
    printed = cv_experiment["stdout"]
    assert "continuing the stage" in printed and "fold ensemble" in printed
    winner_se = re.search(r"out-of-fold cv_acc [0-9.]+ ± ([0-9.]+) SE", printed).group(1)  # the winner's line is first
    assert re.search(r"chosen out of fold: cv_acc [0-9.]+ ± ([0-9.]+) SE", printed).group(1) == winner_se, \
        "the recommendation and the finalists' table must print the same standard error"


def test_report_ranks_out_of_fold_and_the_exported_fold_ensemble_reproduces_it_from_pngs(cv_experiment, tmp_path):
    exp, out = cv_experiment["exp"], tmp_path / "summary"
    run = lambda module, *a: in_process(module, list(a))  # noqa: E731  (no fresh interpreter: 4 s of imports each)
    proc = run("analysis.summarize", str(exp), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    recipes = pd.read_csv(out / "finalists.csv")
    assert {"cv_acc", "cv_acc_se", "diff_to_best"} <= set(recipes.columns) and recipes["cv_acc_se"].iloc[0] > 0
    assert len(recipes) == 2 and (recipes["cv_images"] == 1080).all() and bool(recipes["winner"].iloc[0])
    report = (out / "report.html").read_text()
    assert "cross-validated" in report and "out-of-fold" in report
    chosen = pd.read_csv(out / "chosen.csv").iloc[0]

    bundle = tmp_path / "bundle"
    proc = run("tl.export", str(exp), "--out", str(bundle), "--gradcam", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((bundle / "model.json").read_text())
    assert len(meta["members"]) == K, "the fold ensemble ships its K fold models"

    data = np.load(cv_experiment["data"] / "pneumoniamnist.npz")
    pngs = []
    for i, image in enumerate(data["test_images"]):
        pngs.append(tmp_path / "png" / f"{i:04d}.png")
        pngs[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(pngs[-1])
    proc = run("tl.predict", str(bundle), *map(str, pngs), "--out", str(tmp_path / "pred.csv"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "pred.csv") as f:
        called = [row["label_argmax"] for row in csv.DictReader(f)]
    truth = [meta["class_names"][int(y)] for y in data["test_labels"].reshape(-1)]
    accuracy = float(np.mean([c == t for c, t in zip(called, truth)]))
    assert accuracy == pytest.approx(float(chosen["test_acc"]), abs=1e-9), (accuracy, chosen["test_acc"])
