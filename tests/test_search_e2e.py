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


# 2 epochs, grace period = max epochs: no trial stops early, and 4 finalist trials stay cheap.
GRID_ARGS = ["-m", "tl.search", "search_spaces/smoke.py", "--sampler", "grid", "--set", "lr=0.003", "--set", "epochs=2",
             "--max-epochs", "2", "--grace-period", "2", "--finalists", "2", "--finalist-seeds", "2"]


@pytest.fixture(scope="module")
def grid_experiment(tmp_path_factory, data_dir) -> Path:
    """A 2-trial grid whose trials both run all 2 epochs (so both can be finalists), then its
    finalist stage: the 2 recipes re-trained over 2 new seeds."""
    storage = tmp_path_factory.mktemp("grid")
    proc = _run([*GRID_ARGS, "--data-dir", str(data_dir), "--storage", str(storage), "--name", "grid"])
    assert proc.returncode == 0, f"grid search failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (storage / "search_stdout.txt").write_text(proc.stdout)
    return storage / "grid"


def test_grid_sampler_runs_every_combination_once(grid_experiment):
    """SAMPLER grid through the CLI: Ray's BasicVariantGenerator gets every combination as a point."""
    assert "grid: 2 trials" in (grid_experiment.parent / "search_stdout.txt").read_text()
    trials = _trials(grid_experiment)
    assert sorted(t["params"]["batch_size"] for t in trials) == [64, 128], [t["params"] for t in trials]
    for t in trials:
        assert t["params"]["lr"] == 0.003 and t["params"]["seed"] == 0, t["params"]
        assert len(t["rows"]) == 2, f"{t['dir'].name}: grace period 2 = max epochs, no trial may stop early"


def test_search_records_split_audit_and_test_fingerprint(smoke_experiment):
    """Issue 12: the audit ran before Ray (PneumoniaMNIST: 10 exact train/val pairs, measured),
    and every saved prediction carries the test split's fingerprint from tl_search.json."""
    meta = json.loads((smoke_experiment / "tl_search.json").read_text())
    audit = meta["split_audit"]
    assert audit["exact_duplicates"] == {"train|val": 10, "train|test": 0, "val|test": 0}, audit
    assert audit["group_overlap"] is None and (smoke_experiment / "split_audit.npz").is_file()
    printed = (smoke_experiment.parent / "search_stdout.txt").read_text()
    assert "split audit" in printed and printed.index("split audit") < printed.index("best trial by")
    fingerprint = meta["dataset"]["test_fingerprint"]
    saved = [str(np.load(t["dir"] / "test_predictions.npz")["test_fingerprint"])
             for t in _trials(smoke_experiment) if (t["dir"] / "test_predictions.npz").is_file()]
    assert saved and set(saved) == {fingerprint}, (saved, fingerprint)


def _finalist_means(runs: list[dict]) -> dict[int, tuple[float, float]]:
    """Recipe id -> (mean best val acc, mean best val loss) over its seeds, from result.json alone."""
    by_recipe: dict[int, list[dict]] = {}
    for t in runs:
        by_recipe.setdefault(t["params"]["recipe_id"], []).append(t)
    return {r: (float(np.mean([max(row["val_acc"] for row in t["rows"]) for t in ts])),
                float(np.mean([min(row["val_loss"] for row in t["rows"]) for t in ts]))) for r, ts in by_recipe.items()}


def test_finalists_run_all_epochs_with_new_seeds_and_the_best_mean_val_wins(grid_experiment):
    """Issue 12: K x S finalist trials in EXP/finalists, same recipes as the search's, new seeds,
    every epoch run and tested; the printed winner is the best mean val (then val loss, recipe id)."""
    search = {t["rows"][-1]["trial_id"]: t["params"] for t in _trials(grid_experiment)}
    runs = _trials(grid_experiment / "finalists")
    assert len(runs) == 2 * 2, f"expected K x S = 4 finalist trials, found {len(runs)}"
    seeds: dict[int, list[int]] = {}
    for t in runs:
        p = t["params"]
        assert p["stage"] == "finalist" and p["source_trial"] in search, p
        source = search[p["source_trial"]]
        assert {k: v for k, v in p.items() if k not in ("seed", "stage", "recipe_id", "source_trial")} == \
            {k: v for k, v in source.items() if k != "seed" and not k.startswith("weights_for_")}, "not the search's recipe"
        assert [r["epoch"] for r in t["rows"]] == list(range(1, p["epochs"] + 1)), f"{t['dir'].name}: stopped early"
        assert all(k in t["rows"][-1] for k in TEST_KEYS), f"{t['dir'].name}: not tested"
        seeds.setdefault(p["recipe_id"], []).append(p["seed"])
    search_seeds = {p["seed"] for p in search.values()}
    assert sorted(seeds) == [1, 2] and all(len(set(s)) == 2 and not set(s) & search_seeds for s in seeds.values()), \
        f"seeds {seeds} must differ from each other and from the search's {search_seeds}"
    means = _finalist_means(runs)
    expected = min(means, key=lambda r: (-means[r][0], means[r][1], r))
    printed = (grid_experiment.parent / "search_stdout.txt").read_text()
    winner = next(line for line in printed.splitlines() if "finalist winner:" in line)
    assert f"recipe {expected} " in winner, f"means {means}, printed {winner!r}"
    assert f"val_acc {means[expected][0]:.4f} ± " in printed


def test_report_finalists_section_agrees_with_the_printed_lines(grid_experiment, tmp_path):
    out = tmp_path / "summary"
    proc = _run(["-m", "analysis.summarize", str(grid_experiment), "--out", str(out)], timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pandas as pd

    assert len(pd.read_csv(out / "trials.csv")) == 2, "Table 1 must hold the 2 search trials, not the finalists"
    recipes = pd.read_csv(out / "finalists.csv")
    printed = [line.strip().removeprefix("[tl.search] ")
               for line in (grid_experiment.parent / "search_stdout.txt").read_text().splitlines()]
    shown = [line for line in printed if line.startswith(("recipe ", "finalist winner:", "seed ensemble"))]
    assert len(shown) == 4, shown
    report = (out / "report.html").read_text()
    assert "<h2>Finalists</h2>" in report and "without early stopping" in report
    for line in shown:
        assert line in report and line in (out / "summary.md").read_text(), f"report lacks the printed {line!r}"
    win = recipes.iloc[0]
    assert bool(win["winner"]) and f"recipe {win['recipe_id']} " in shown[2]
    ensemble = pd.read_csv(out / "finalist_ensemble.csv").iloc[0]
    meta = json.loads((grid_experiment / "tl_search.json").read_text())
    assert ensemble["test_fingerprint"] == meta["dataset"]["test_fingerprint"]
    mine = [t for t in _trials(grid_experiment / "finalists") if t["params"]["recipe_id"] == win["recipe_id"]]
    probs = np.mean([np.load(t["dir"] / "test_predictions.npz")["probs"] for t in mine], axis=0)
    labels = np.load(mine[0]["dir"] / "test_predictions.npz")["labels"]
    assert abs((probs.argmax(1) == labels).mean() - ensemble["test_acc"]) < 1e-9
    assert ensemble["test_acc_low"] <= ensemble["test_acc"] <= ensemble["test_acc_high"]
    assert meta["finalists"]["seeds"] == sorted({t["params"]["seed"] for t in mine})


def test_resume_keeps_a_finished_finalist_stage(grid_experiment, data_dir):
    runs = lambda: {t["dir"].name: len(t["rows"]) for t in _trials(grid_experiment / "finalists")}  # noqa: E731
    before = runs()
    proc = _run([*GRID_ARGS, "--data-dir", str(data_dir), "--storage", str(grid_experiment.parent), "--name", "grid",
                 "--resume"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "continuing the stage" in proc.stdout and "finalist winner:" in proc.stdout
    assert runs() == before, "resuming re-ran or added finalist trials"
