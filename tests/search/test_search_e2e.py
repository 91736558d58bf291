"""End to end: ``python -m tl.search search_spaces/smoke.py`` on real PneumoniaMNIST (the 1,200 images in
tests/fixtures), then the report."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tl.core.results import read_params, read_result_rows, trial_dirs

pytestmark = pytest.mark.slow  # each test runs a Ray search

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SPACE = ROOT / "search_spaces" / "smoke.py"
EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr", "epoch_time_s", "images_per_s")
TEST_KEYS = ("test_acc", "test_loss", "test_auc", "test_sensitivity", "test_specificity")


def _run(args: list[str], env_extra: dict | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _trials(exp: Path) -> list[dict]:
    """Each trial folder's params and its result.json rows as Ray wrote them (no unreadable line allowed)."""
    trials = []
    for d in trial_dirs(exp):
        rows, bad = read_result_rows(d)
        assert bad == 0, f"{d.name}: {bad} unreadable line(s) in result.json of a finished search"
        trials.append({"dir": d, "params": read_params(d), "rows": rows})
    return trials


def _split_sizes(data: Path) -> dict[str, int]:
    """Rows per split of the PneumoniaMNIST file the searches here read, counted by numpy."""
    with np.load(data / "pneumoniamnist.npz") as npz:
        return {s: len(npz[f"{s}_labels"]) for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def loud_auc_experiment(tmp_path_factory, small_data_dir) -> tuple[Path, str]:
    """The smoke space chosen by val_auc, --verbose and --repeatable. On tests/fixtures's 960 training
    images every trial still predicts the majority class after one and two epochs (equal val_acc:
    ASHA would have nothing to stop); val_auc ranks them, and one trial at a time makes the order,
    so which trials ASHA stops, the same on every run. One search for both the ASHA and --verbose
    tests (they took two, one on the full 4,708-image set: 67 s; this one 21 s)."""
    storage = tmp_path_factory.mktemp("loud")
    space = storage / "smoke_auc.py"
    text = SMOKE_SPACE.read_text()
    assert 'METRIC = "val_acc"' in text, "the smoke space's METRIC line moved: update this fixture"
    space.write_text(text.replace('METRIC = "val_acc"', 'METRIC = "val_auc"'))
    proc = _run(["-m", "tl.search", str(space), "--data-dir", str(small_data_dir), "--storage", str(storage),
                 "--name", "loud", "--num-samples", "4", "--verbose", "--repeatable"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return storage / "loud", out


# The live view's lines (tl/search/console.py), field by field.
STATUS = re.compile(r"^\[tl\.search\] \d+m\d\ds \| trials (\d+) running, (\d+) finished, (\d+) stopped by ASHA, "
                    r"(\d+) errored \((\d+)/4 done\) \| best val_acc (?:0\.\d{4}: convmodel, none, fine-tune, "
                    r"lr [0-9.e-]+, 28 px|: none yet)$")
TRIAL_END = re.compile(r"^\[tl\.search\] trial ([0-9a-f]{8}) (stopped by ASHA|finished, tested once) after (\d)/(\d) "
                       r"epochs: best val_acc (0\.\d{4}) \| convmodel, none, fine-tune, lr [0-9.e-]+, 28 px$")


def test_console_is_a_few_lines_a_person_can_follow(smoke_experiment):
    out = (smoke_experiment.parent / "search_stdout.txt").read_text().splitlines()
    err = (smoke_experiment.parent / "search_stderr.txt").read_text().splitlines()
    # About 20 lines here (space 5, trials 4, end 7, a status line per 30 s); Ray's boxes would add 25 per trial.
    assert len(out) + len(err) <= 30, f"{len(out)} + {len(err)} lines; Ray's chatter is back?\n" + "\n".join(out + err)
    noise = [ln for ln in out + err if any(w in ln for w in ("│", "Trial status", "auth", "session_", "study created"))]
    assert not noise, f"Ray/Optuna chatter without --verbose: {noise}"
    assert any("lr 0.0001–0.03 (log); batch_size {64, 128}" in ln for ln in out), "space summary missing"
    trials = {t["dir"].name[:8]: t for t in _trials(smoke_experiment)}
    ends = [m for ln in out if (m := TRIAL_END.match(ln))]
    assert sorted(m[1] for m in ends) == sorted(trials), f"one end line per trial expected: {ends}"
    for m in ends:
        t = trials[m[1]]
        epochs_run = len(t["rows"])
        assert (int(m[3]), int(m[4])) == (epochs_run, t["params"]["epochs"]), m[0]
        assert (m[2] == "stopped by ASHA") == (epochs_run < t["params"]["epochs"]), m[0]
        assert abs(float(m[5]) - max(r["val_acc"] for r in t["rows"])) < 1e-4, m[0]
    statuses = [m for ln in out if (m := STATUS.match(ln))]
    assert statuses, "no status line\n" + "\n".join(out)
    stopped = sum(len(t["rows"]) < t["params"]["epochs"] for t in trials.values())
    final = statuses[-1]
    assert final.groups() == ("0", str(4 - stopped), str(stopped), "0", "4"), final[0]
    assert f"{max(max(r['val_acc'] for r in t['rows']) for t in trials.values()):.4f}" in final[0], final[0]


@pytest.mark.slow
def test_each_trial_is_an_mlflow_run_with_params_and_epoch_metrics(smoke_experiment, small_data_dir, tmp_path):
    """--mlflow: every trial is an MLflow run (Ray's MLflowLoggerCallback), read back with MLflow's client.
    On the shared smoke search (conftest.smoke_experiment: 4 trials, some stopped by ASHA, --mlflow)."""
    mlflow = pytest.importorskip("mlflow")
    store = smoke_experiment.parent / "mlruns"
    stdout = (smoke_experiment.parent / "search_stdout.txt").read_text()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    n_trials = len(trial_dirs(smoke_experiment))
    assert f"MLflow: {n_trials} runs in experiment 'smoke' at {uri}" in stdout, stdout[-1500:]

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("smoke")
    assert experiment is not None, "no MLflow experiment named after the search"
    # Ray names each run after its trial, "<trainable>_<trial id>"; tl's trial folders start with the id.
    runs = {r.info.run_name.rsplit("_", 1)[-1]: r for r in client.search_runs([experiment.experiment_id])}
    trials = {d.name.split("_")[0]: d for d in trial_dirs(smoke_experiment)}
    assert sorted(runs) == sorted(trials), f"one run per trial: runs {sorted(runs)}, trials {sorted(trials)}"
    for trial_id, trial_dir in trials.items():
        run, params = runs[trial_id], read_params(trial_dir)
        assert run.info.status == "FINISHED", run.info.status
        for key in ("backbone", "weights", "freeze", "batch_size", "epochs"):
            assert run.data.params[key] == str(params[key]), (key, run.data.params[key], params[key])
        assert float(run.data.params["lr"]) == pytest.approx(params["lr"], rel=1e-6)
        rows, _ = read_result_rows(trial_dir)
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [(m.step, round(m.value, 6)) for m in history] == \
            [(r["training_iteration"], round(r["val_acc"], 6)) for r in rows], f"{trial_id}: val_acc per epoch"
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == len(rows)

    chosen = [r for r in runs.values() if r.data.tags.get("tl.chosen") == "true"]
    assert len(chosen) == 1, "exactly one run tagged as the chosen trial"
    chosen_id = chosen[0].info.run_name.rsplit("_", 1)[-1]
    printed = stdout.split("trial folder: ")[1].splitlines()[0]
    assert Path(printed).name.startswith(chosen_id), "tagged run is not the printed trial"
    assert f"recommended model: trial {chosen_id} (single pick)" in stdout, stdout[-1500:]
    # Without finalists the report and tl.export describe that same single trial (issue 20).
    from analysis.summarize import main as summarize_main
    from tl.use.export import main as export_main

    assert summarize_main([str(smoke_experiment), "--out", str(tmp_path / "report")]) == 0
    import pandas as pd

    assert pd.read_csv(tmp_path / "report" / "chosen.csv", dtype=str)["trials"].tolist() == [chosen_id]
    assert export_main([str(smoke_experiment), "--out", str(tmp_path / "bundle"),
                        "--data-dir", str(small_data_dir), "--gradcam", "0"]) == 0
    exported = json.loads((tmp_path / "bundle" / "model.json").read_text())["provenance"]["trials"]
    assert exported == [chosen_id], exported
    files = {a.path for a in client.list_artifacts(chosen[0].info.run_id)}
    assert {"params.json", "result.json", "test_predictions.npz"} <= files, files
    artifacts = Path(chosen[0].info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(store), f"artifacts beside the store, not in the cwd: {artifacts}"


def test_trials_write_the_event_files_the_printed_tensorboard_command_reads(smoke_experiment):
    printed = (smoke_experiment.parent / "search_stdout.txt").read_text()
    assert f"tensorboard --logdir {smoke_experiment}\n" in printed, printed[-800:]
    for t in _trials(smoke_experiment):
        assert list(t["dir"].glob("events.out.tfevents.*")), f"{t['dir'].name}: no TensorBoard event file"


def test_sigterm_saves_the_search_and_prints_how_to_resume_it(tmp_path, small_data_dir):
    exp = tmp_path / "term"
    cmd = [sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(small_data_dir),
           "--storage", str(tmp_path), "--name", "term", "--num-samples", "4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (exp.is_dir() and any(read_result_rows(d)[0] for d in trial_dirs(exp))):
        time.sleep(0.5)
    assert proc.poll() is None, "search ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"exit {proc.returncode}\n{out[-2000:]}"
    expected = (f"python -m tl.search search_spaces/smoke.py --data-dir {small_data_dir} --storage {tmp_path} "
                f"--num-samples 4 --name term --resume")
    assert expected in out, out[-2000:]
    assert (exp / "tuner.pkl").is_file(), "experiment state not saved"


def test_smoke_search_leaves_a_complete_experiment_folder(smoke_experiment, small_data_dir):
    trials = _trials(smoke_experiment)
    assert len(trials) == 4, f"expected 4 trials, found {len(trials)}"
    meta = json.loads((smoke_experiment / "tl_search.json").read_text())
    assert meta["dataset"]["split_sizes"] == _split_sizes(small_data_dir), meta["dataset"]
    for t in trials:
        assert [r["epoch"] for r in t["rows"]] == list(range(1, len(t["rows"]) + 1)), f"{t['dir'].name}: epochs not 1..k"
        for row in t["rows"]:
            missing = [k for k in EPOCH_KEYS if k not in row]
            assert not missing, f"{t['dir'].name}: epoch row lacks {missing}"
            assert 0.0 <= row["val_acc"] <= 1.0 and 0.0 <= row["val_auc"] <= 1.0
        # Issue 28: one checkpoint per trial; once the trial ended (finished or stopped by ASHA) only what
        # export and the report read is left in it, not the resumable state (weights + optimizer).
        checkpoints = list(t["dir"].glob("checkpoint_*"))
        assert len(checkpoints) == 1, f"{t['dir'].name}: {len(checkpoints)} checkpoints kept, want 1"
        assert (checkpoints[0] / "best_model.pt").is_file(), f"{t['dir'].name}: no best weights"
        assert not (checkpoints[0] / "state.pt").exists(), f"{t['dir'].name}: an ended trial kept its resumable state"
    printed = (smoke_experiment.parent / "search_stdout.txt").read_text()
    assert "experiment folder " in printed and "of it best-by-val weights" in printed, printed[-1500:]


def test_asha_stops_some_trials_and_completed_ones_are_tested_once(loud_auc_experiment, small_data_dir):
    stopped = _assert_tested_once_and_stopped_never(loud_auc_experiment[0], _split_sizes(small_data_dir))
    assert stopped, "ASHA stopped no trial early"


def test_completed_trials_are_tested_once_and_stopped_ones_never(smoke_experiment, small_data_dir):
    _assert_tested_once_and_stopped_never(smoke_experiment, _split_sizes(small_data_dir))


def _assert_tested_once_and_stopped_never(experiment: Path, sizes: dict[str, int]) -> list[dict]:
    """Each completed trial has test metrics on its last row only and saved predictions of the whole
    test and val splits; no stopped trial saw the test split. Returns the stopped trials."""
    trials = _trials(experiment)
    stopped = [t for t in trials if len(t["rows"]) < t["params"]["epochs"]]
    completed = [t for t in trials if len(t["rows"]) == t["params"]["epochs"]]
    assert completed, "no trial ran all its epochs"
    for t in completed:
        last = t["rows"][-1]
        assert all(k in last for k in TEST_KEYS), f"{t['dir'].name}: last row lacks test metrics"
        assert not any("test_acc" in r for r in t["rows"][:-1]), "test evaluated before the end"
        preds = np.load(t["dir"] / "test_predictions.npz")
        assert preds["probs"].shape == (sizes["test"], 2)
        assert np.allclose(preds["probs"].sum(1), 1, atol=1e-4)
        assert abs((preds["probs"].argmax(1) == preds["labels"]).mean() - last["test_acc"]) < 1e-9
        val = np.load(t["dir"] / "val_predictions.npz")
        assert val["probs"].shape == (sizes["val"], 2), val["probs"].shape
        assert str(val["test_fingerprint"]) == str(preds["test_fingerprint"])
    for t in stopped:
        assert not any("test_acc" in r for r in t["rows"]), "a stopped trial saw the test split"
    return stopped


def test_summarize_reads_the_real_smoke_experiment(smoke_experiment, tmp_path):
    out = tmp_path / "summary"
    proc = _run(["-m", "analysis.summarize", str(smoke_experiment), "--out", str(out)], timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("summary.csv", "summary.md", "report.html"):
        assert (out / name).is_file(), f"{name} not written"
    assert list(out.glob("*.png")), "no plots written"
    assert "trials ran concurrently" in (out / "summary.md").read_text(), "the report must say a rerun can differ"
    import pandas as pd

    frame = pd.read_csv(out / "summary.csv")
    epochs_reported = sum(len(t["rows"]) for t in _trials(smoke_experiment))
    assert len(frame) == epochs_reported, "summary.csv must hold one row per trial and epoch"
    printed = (smoke_experiment.parent / "search_stdout.txt").read_text()
    folder = Path(printed.split("trial folder: ")[1].splitlines()[0]).name
    chosen = pd.read_csv(out / "chosen.csv", dtype={"trials": str})
    assert folder.startswith(chosen["trials"].iloc[0] + "_"), \
        f"search printed {folder}, the report recommends {chosen['trials'].iloc[0]}"


def test_resume_of_a_finished_search_keeps_its_trials(smoke_experiment, small_data_dir):
    before = {t["dir"].name: len(t["rows"]) for t in _trials(smoke_experiment)}
    proc = _run(["-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(small_data_dir),
                 "--storage", str(smoke_experiment.parent), "--name", "smoke", "--resume"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = {t["dir"].name: len(t["rows"]) for t in _trials(smoke_experiment)}
    assert after == before, "resuming a finished search changed its trials"


# 2 epochs, grace period = max epochs: no trial stops early, and 4 finalist trials stay cheap.
GRID_ARGS = ["-m", "tl.search", "search_spaces/smoke.py", "--sampler", "grid", "--set", "lr=0.003", "--set", "epochs=2",
             "--max-epochs", "2", "--grace-period", "2", "--finalists", "2", "--finalist-seeds", "2", "--repeatable"]


@pytest.fixture(scope="module")
def grid_experiment(tmp_path_factory, small_data_dir) -> Path:
    """A 2-trial grid whose trials both run all 2 epochs (so both can be finalists), then its
    finalist stage: the 2 recipes re-trained over 2 new seeds."""
    storage = tmp_path_factory.mktemp("grid")
    proc = _run([*GRID_ARGS, "--data-dir", str(small_data_dir), "--storage", str(storage), "--name", "grid",
                 "--mlflow", str(storage / "mlruns")])
    assert proc.returncode == 0, f"grid search failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (storage / "search_stdout.txt").write_text(proc.stdout)
    (storage / "search_stderr.txt").write_text(proc.stderr)
    return storage / "grid"


def test_grid_sampler_runs_every_combination_once(grid_experiment):
    """SAMPLER grid through the CLI: Ray's BasicVariantGenerator gets every combination as a point."""
    assert "grid: 2 trials" in (grid_experiment.parent / "search_stdout.txt").read_text()
    # Ray warns when a grid point sets a key its param_space holds as a different constant.
    assert "Pre-set value" not in (grid_experiment.parent / "search_stderr.txt").read_text()
    trials = _trials(grid_experiment)
    assert sorted(t["params"]["batch_size"] for t in trials) == [64, 128], [t["params"] for t in trials]
    for t in trials:
        assert t["params"]["lr"] == 0.003 and t["params"]["seed"] == 0, t["params"]
        assert len(t["rows"]) == 2, f"{t['dir'].name}: grace period 2 = max epochs, no trial may stop early"
    # --repeatable: one trial at a time, though the machine has room for two 1-CPU trials
    windows = sorted((t["rows"][0]["timestamp"] - t["rows"][0]["time_this_iter_s"], t["rows"][-1]["timestamp"])
                     for t in trials)
    assert windows[1][0] >= windows[0][1] - 1, f"trials overlapped in time: {windows}"
    assert json.loads((grid_experiment / "tl_search.json").read_text())["args"]["repeatable"] is True


def test_search_records_split_audit_and_test_fingerprint(smoke_experiment, small_data_dir):
    """Issue 12: the audit ran before Ray (tests/fixtures keeps 2 of PneumoniaMNIST's 10 exact train/val pairs),
    and every saved prediction carries the test split's fingerprint from tl_search.json."""
    meta = json.loads((smoke_experiment / "tl_search.json").read_text())
    audit = meta["split_audit"]
    # Expected from the file itself: pairs of byte-identical images across two splits.
    with np.load(small_data_dir / "pneumoniamnist.npz") as npz:
        digests = {s: Counter(hashlib.sha256(im.tobytes()).hexdigest() for im in npz[f"{s}_images"])
                   for s in ("train", "val", "test")}
    expected = {f"{a}|{b}": sum(n * digests[b][d] for d, n in digests[a].items() if d in digests[b])
                for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}
    assert expected["train|val"] > 0, "the fixture keeps repeated images across splits: the test must see some"
    assert audit["exact_duplicates"] == expected, (audit, expected)
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
    assert "trials ran one at a time (--repeatable)" in report
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


def test_resume_keeps_a_finished_finalist_stage(grid_experiment, small_data_dir):
    runs = lambda: {t["dir"].name: len(t["rows"]) for t in _trials(grid_experiment / "finalists")}  # noqa: E731
    before = runs()
    proc = _run([*GRID_ARGS, "--data-dir", str(small_data_dir), "--storage", str(grid_experiment.parent),
                 "--name", "grid", "--resume"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "continuing the stage" in proc.stdout and "finalist winner:" in proc.stdout
    assert runs() == before, "resuming re-ran or added finalist trials"


def test_verbose_brings_back_rays_own_output(loud_auc_experiment):
    out = loud_auc_experiment[1]
    assert "started with configuration" in out and "Trial status" in out, out[-2000:]
    assert "(train_transfer pid=" in out, "worker output should reach the driver with --verbose"
    assert not [ln for ln in out.splitlines() if STATUS.match(ln)], "no live-view status lines with --verbose"


def test_export_and_predict_the_trial_the_search_printed(smoke_experiment, small_data_dir, tmp_path):
    """The issue-14 flow on a real search: export what tl.search printed, predict its test split."""
    from tl.use.export import main as export_main
    from tl.use.predict import main as predict_main

    printed = (smoke_experiment.parent / "search_stdout.txt").read_text()
    folder = smoke_experiment / Path(printed.split("trial folder: ")[1].splitlines()[0]).name
    assert export_main([str(smoke_experiment), "--out", str(tmp_path / "bundle"),
                        "--data-dir", str(small_data_dir)]) == 0
    meta = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert folder.name.startswith(meta["provenance"]["trials"][0]), (folder.name, meta["provenance"]["trials"])
    out = tmp_path / "p.csv"
    assert predict_main([str(tmp_path / "bundle"), f"{small_data_dir / 'pneumoniamnist.npz'}:test",
                         "--out", str(out)]) == 0
    import pandas as pd
    from tl.core.calibration import apply_temperature

    saved = np.load(folder / "test_predictions.npz")["probs"]
    got = pd.read_csv(out)[["p_normal", "p_pneumonia"]].to_numpy()
    assert np.abs(got - apply_temperature(saved, meta["temperature"])).max() <= 1e-5


def test_console_report_mlflow_and_export_agree_on_the_finalist_winner(grid_experiment, small_data_dir, tmp_path):
    """Issues 14 and 20: with a finalist stage, the model is the winning recipe's seed ensemble, and the
    console, the report, MLflow's tl.chosen tag and tl.export all name the same seed trials. The winner is
    recomputed here from result.json alone."""
    import mlflow
    import pandas as pd

    from analysis.summarize import main as summarize_main
    from tl.use.export import main as export_main

    runs = _trials(grid_experiment / "finalists")
    means = _finalist_means(runs)
    winner = min(means, key=lambda r: (-means[r][0], means[r][1], r))
    seeds = sorted(t["rows"][-1]["trial_id"] for t in runs if t["params"]["recipe_id"] == winner)
    printed = (grid_experiment.parent / "search_stdout.txt").read_text()
    console = next(line for line in printed.splitlines() if "recommended model:" in line)
    assert f"finalist recipe {winner}'s seed ensemble (2 seeds: {', '.join(seeds)})" in console, console
    assert summarize_main([str(grid_experiment), "--out", str(tmp_path / "report")]) == 0
    chosen = pd.read_csv(tmp_path / "report" / "chosen.csv")
    assert sorted(chosen["trials"].iloc[0].split(", ")) == seeds, chosen.to_dict("records")
    assert "finalist recipe" in (tmp_path / "report" / "summary.md").read_text().split("## ")[1], "first section"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{grid_experiment.parent / 'mlruns' / 'mlflow.db'}")
    found = client.get_experiment_by_name("grid")
    tagged = sorted(r.info.run_name for r in client.search_runs([found.experiment_id])
                    if r.data.tags.get("tl.chosen") == "true")
    # Ray names a run "<trainable>_<trial id>"; a finalist's trial id holds an underscore itself.
    assert len(tagged) == len(seeds) and all(name.endswith(f"_{s}") for name, s in zip(tagged, seeds)), \
        f"MLflow tags {tagged}, the winner's seeds are {seeds}"
    assert export_main([str(grid_experiment), "--out", str(tmp_path / "b"), "--data-dir", str(small_data_dir),
                        "--gradcam", "0"]) == 0
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    assert meta["kind"] == "ensemble" and sorted(meta["provenance"]["trials"]) == seeds, (meta["provenance"], seeds)
