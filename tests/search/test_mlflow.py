"""``--mlflow``: every trial becomes an MLflow run (Ray's MLflowLoggerCallback); read back with MLflow's client."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tl.core.results import read_params, read_result_rows, trial_dirs

ROOT = Path(__file__).resolve().parents[2]


def _search(data_dir: Path, storage: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(data_dir),
           "--storage", str(storage), "--name", "tracked", "--num-samples", "2", "--max-epochs", "2", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env or os.environ.copy())


def test_missing_mlflow_is_one_line_naming_the_extra(tmp_path, small_data_dir):
    blocker = tmp_path / "blocked" / "mlflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('mlflow is not installed (test stand-in)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}
    proc = _search(small_data_dir, tmp_path / "results", "--mlflow", env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["error: --mlflow needs MLflow: pip install -e '.[mlflow]'"], proc.stderr
    assert not (tmp_path / "results" / "tracked").exists(), "nothing may be written before the error"
    assert "Ray" not in proc.stdout, "the error must come before Ray starts"


@pytest.mark.slow
def test_each_trial_is_an_mlflow_run_with_params_and_epoch_metrics(smoke_experiment, small_data_dir, tmp_path):
    """On the shared smoke search (conftest.smoke_experiment: 4 trials, some stopped by ASHA, --mlflow)."""
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
