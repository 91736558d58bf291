"""End to end: ``python -m tl.search search_spaces/smoke.py`` on real PneumoniaMNIST, then the report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr", "epoch_time_s", "images_per_s")
TEST_KEYS = ("test_acc", "test_loss", "test_auc", "test_sensitivity", "test_specificity")


def _run(args: list[str], env_extra: dict | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _trials(exp: Path) -> list[dict]:
    trials = []
    for d in sorted(p.parent for p in exp.glob("*/params.json")):
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines() if line.strip()]
        trials.append({"dir": d, "params": json.loads((d / "params.json").read_text()), "rows": rows})
    return trials


@pytest.fixture(scope="module")
def smoke_experiment(tmp_path_factory, data_dir) -> Path:
    storage = tmp_path_factory.mktemp("results")
    proc = _run(["-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(data_dir),
                 "--storage", str(storage), "--name", "smoke", "--num-samples", "4"])
    assert proc.returncode == 0, f"search failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "best trial by val_acc" in proc.stdout, proc.stdout[-2000:]
    (storage / "search_stdout.txt").write_text(proc.stdout)
    return storage / "smoke"


def test_smoke_search_leaves_a_complete_experiment_folder(smoke_experiment):
    trials = _trials(smoke_experiment)
    assert len(trials) == 4, f"expected 4 trials, found {len(trials)}"
    meta = json.loads((smoke_experiment / "tl_search.json").read_text())
    assert meta["dataset"]["split_sizes"] == {"train": 4708, "val": 524, "test": 624}, meta["dataset"]
    for t in trials:
        assert [r["epoch"] for r in t["rows"]] == list(range(1, len(t["rows"]) + 1)), f"{t['dir'].name}: epochs not 1..k"
        for row in t["rows"]:
            missing = [k for k in EPOCH_KEYS if k not in row]
            assert not missing, f"{t['dir'].name}: epoch row lacks {missing}"
            assert 0.0 <= row["val_acc"] <= 1.0 and 0.0 <= row["val_auc"] <= 1.0
        assert list(t["dir"].glob("checkpoint_*/state.pt")), f"{t['dir'].name}: no checkpoint"


def test_asha_stops_some_trials_and_completed_ones_are_tested_once(smoke_experiment):
    trials = _trials(smoke_experiment)
    stopped = [t for t in trials if len(t["rows"]) < t["params"]["epochs"]]
    completed = [t for t in trials if len(t["rows"]) == t["params"]["epochs"]]
    assert stopped, "ASHA stopped no trial early"
    assert completed, "no trial ran all its epochs"
    for t in completed:
        last = t["rows"][-1]
        assert all(k in last for k in TEST_KEYS), f"{t['dir'].name}: last row lacks test metrics"
        assert not any("test_acc" in r for r in t["rows"][:-1]), "test evaluated before the end"
        preds = np.load(t["dir"] / "test_predictions.npz")
        assert preds["probs"].shape == (624, 2)
        assert np.allclose(preds["probs"].sum(1), 1, atol=1e-4)
        assert abs((preds["probs"].argmax(1) == preds["labels"]).mean() - last["test_acc"]) < 1e-9
        val = np.load(t["dir"] / "val_predictions.npz")
        assert val["probs"].shape == (524, 2) and str(val["test_fingerprint"]) == str(preds["test_fingerprint"])
    for t in stopped:
        assert not any("test_acc" in r for r in t["rows"]), "a stopped trial saw the test split"


def test_summarize_reads_the_real_smoke_experiment(smoke_experiment, tmp_path):
    out = tmp_path / "summary"
    proc = _run(["-m", "analysis.summarize", str(smoke_experiment), "--out", str(out)], timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("summary.csv", "summary.md", "report.html"):
        assert (out / name).is_file(), f"{name} not written"
    assert list(out.glob("*.png")), "no plots written"
    import pandas as pd

    frame = pd.read_csv(out / "summary.csv")
    epochs_reported = sum(len(t["rows"]) for t in _trials(smoke_experiment))
    assert len(frame) == epochs_reported, "summary.csv must hold one row per trial and epoch"
    printed = (smoke_experiment.parent / "search_stdout.txt").read_text()
    folder = Path(printed.split("trial folder: ")[1].splitlines()[0]).name
    chosen = pd.read_csv(out / "chosen.csv", dtype={"trial": str})
    assert folder.startswith(chosen["trial"].iloc[0] + "_"), \
        f"search printed {folder}, the report chose {chosen['trial'].iloc[0]}"


def test_resume_of_a_finished_search_keeps_its_trials(smoke_experiment, data_dir):
    before = {t["dir"].name: len(t["rows"]) for t in _trials(smoke_experiment)}
    proc = _run(["-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(data_dir),
                 "--storage", str(smoke_experiment.parent), "--name", "smoke", "--resume"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = {t["dir"].name: len(t["rows"]) for t in _trials(smoke_experiment)}
    assert after == before, "resuming a finished search changed its trials"


def test_grid_sampler_runs_every_combination_once(tmp_path, data_dir):
    """SAMPLER grid through the CLI: Ray's BasicVariantGenerator gets every combination as a point."""
    proc = _run(["-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(data_dir), "--storage", str(tmp_path),
                 "--name", "grid", "--sampler", "grid", "--set", "lr=0.003", "--grace-period", "3"])
    assert proc.returncode == 0, f"grid search failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "grid: 2 trials" in proc.stdout
    trials = _trials(tmp_path / "grid")
    assert sorted(t["params"]["batch_size"] for t in trials) == [64, 128], [t["params"] for t in trials]
    for t in trials:
        assert t["params"]["lr"] == 0.003 and t["params"]["seed"] == 0, t["params"]
        assert len(t["rows"]) == 3, f"{t['dir'].name}: grace period 3 = max epochs, no trial may stop early"


def test_export_and_predict_the_trial_the_search_printed(smoke_experiment, data_dir, tmp_path):
    """The issue-14 flow on a real search: export what tl.search printed, predict its test split."""
    from tl.export import main as export_main
    from tl.predict import main as predict_main

    printed = (smoke_experiment.parent / "search_stdout.txt").read_text()
    folder = smoke_experiment / Path(printed.split("trial folder: ")[1].splitlines()[0]).name
    assert export_main([str(smoke_experiment), "--out", str(tmp_path / "bundle"), "--data-dir", str(data_dir)]) == 0
    meta = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert folder.name.startswith(meta["provenance"]["trials"][0]), (folder.name, meta["provenance"]["trials"])
    out = tmp_path / "p.csv"
    assert predict_main([str(tmp_path / "bundle"), f"{data_dir / 'pneumoniamnist.npz'}:test", "--out", str(out)]) == 0
    import pandas as pd
    from tl.calibration import apply_temperature

    saved = np.load(folder / "test_predictions.npz")["probs"]
    got = pd.read_csv(out)[["p_normal", "p_pneumonia"]].to_numpy()
    assert np.abs(got - apply_temperature(saved, meta["temperature"])).max() <= 1e-5
