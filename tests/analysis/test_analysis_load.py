"""Reading experiment folders: discovery, statuses, the tidy frame, predictions, bad input."""

from __future__ import annotations

import json
import os

import pytest
from analysis_builders import HEALTHY, predictions_with_accuracy

from tl.core.errors import TLError as AnalysisError  # the core raises for folders, analysis for options
from tl.core.results import newest_experiment, read_ray_statuses
from tl.core.results import load_experiments, read_result_rows


def _status(exp, trial_id):
    return exp.trials.set_index("trial_id").loc[trial_id, "status"]


def test_statuses_from_files_and_done_flag(diagnosis_experiment):
    exp = load_experiments([diagnosis_experiment.path])
    expected = {"aaaa0001": "COMPLETED", "aaaa0006": "STOPPED", "aaaa0007": "ERROR"}
    for trial_id, status in expected.items():
        assert _status(exp, trial_id) == status, f"{trial_id}: got {_status(exp, trial_id)}"
    error = exp.trials.set_index("trial_id").loc["aaaa0007", "error"]
    assert error == "RuntimeError: CUDA out of memory", f"error line not extracted: {error!r}"


def test_unfinished_trial_without_ray_state_is_stopped_or_running(builder):
    exp_dir = builder()
    exp_dir.trial("bbbb0001", HEALTHY, test_acc=0.9)
    exp_dir.trial("bbbb0002", HEALTHY, epochs_run=4, done=False)
    exp = load_experiments([exp_dir.path])
    assert _status(exp, "bbbb0002") == "STOPPED/RUNNING", "no done flag, no Ray state: cannot tell"


def test_ray_experiment_state_decides_running(builder):
    exp_dir = builder()
    exp_dir.trial("bbbb0001", HEALTHY, test_acc=0.9)
    exp_dir.trial("bbbb0002", HEALTHY, epochs_run=4, done=False)
    exp_dir.trial("bbbb0003", HEALTHY, epochs_run=2, done=False)
    trial_data = [[json.dumps({"trial_id": t, "status": s, "relative_logdir": "x"}), "{}"]
                  for t, s in (("bbbb0001", "TERMINATED"), ("bbbb0002", "RUNNING"),
                               ("bbbb0003", "TERMINATED"))]
    (exp_dir.path / "experiment_state-2026-11-23_10-00-00.json").write_text(
        json.dumps({"trial_data": trial_data, "runner_data": {}, "stats": {}}))
    assert read_ray_statuses(exp_dir.path)["bbbb0002"] == "RUNNING", "state file not parsed"
    exp = load_experiments([exp_dir.path])
    assert _status(exp, "bbbb0002") == "RUNNING", "Ray says RUNNING"
    assert _status(exp, "bbbb0003") == "STOPPED", "Ray says TERMINATED before the planned epochs"


def test_tidy_frame_has_config_columns_and_no_sampler_bookkeeping(diagnosis_experiment):
    exp = load_experiments([diagnosis_experiment.path])
    frame = exp.frame
    assert len(frame) == 5 * 10 + 3, f"expected 53 (trial, epoch) rows, got {len(frame)}"
    for column in ("trial", "backbone", "freeze", "weights", "lr", "epoch", "val_acc", "status"):
        assert column in frame.columns, f"{column} missing from tidy frame"
    assert not [c for c in frame.columns if c.startswith("weights_for_")], "weights_for_* kept"
    assert "config" not in frame.columns, "Ray's nested config column kept"
    assert "epoch_lr" in frame.columns, "the per-epoch lr must not overwrite the configured lr"
    assert "aaaa0007" in set(exp.trials["trial"]) and "aaaa0007" not in set(frame["trial"]), \
        "errored trial without epochs belongs to trials, not the epoch frame"


def test_predictions_found_in_newest_checkpoint(builder):
    exp_dir = builder()
    exp_dir.trial("cccc0001", HEALTHY, test_acc=0.8, predictions_in="checkpoint")
    exp = load_experiments([exp_dir.path])
    assert "cccc0001" in exp.predictions, "checkpoint fallback not used"
    assert exp.predictions["cccc0001"].correct.mean() == pytest.approx(0.8), "wrong file read"


def test_missing_predictions_of_completed_trial_is_a_note(builder):
    exp_dir = builder()
    exp_dir.trial("cccc0001", HEALTHY, test_acc=0.8, predictions_in="none")
    exp = load_experiments([exp_dir.path])
    assert not exp.predictions, "no predictions expected"
    assert any("cccc0001" in n and "test_predictions.npz" in n for n in exp.notes), exp.notes


def test_half_written_line_and_progress_csv_fallback(builder):
    exp_dir = builder()
    folder = exp_dir.trial("dddd0001", HEALTHY, epochs_run=3, done=False)
    with open(folder / "result.json", "a") as f:
        f.write('{"epoch": 4, "val_')
    csv_trial = exp_dir.trial("dddd0002", HEALTHY, epochs_run=2)
    (csv_trial / "result.json").write_text("")
    (csv_trial / "progress.csv").write_text("epoch,train_acc,val_acc,val_loss,train_loss,trial_id,done\n"
                                            "1,0.6,0.5,0.7,0.7,dddd0002,False\n"
                                            "2,0.7,0.6,0.6,0.6,dddd0002,True\n")
    exp = load_experiments([exp_dir.path])
    runs = exp.trials.set_index("trial_id")["epochs_run"]
    assert runs["dddd0001"] == 3, "half-written last line must be skipped, not crash"
    assert runs["dddd0002"] == 2, "progress.csv fallback not used"
    assert any("unreadable line" in n for n in exp.notes), exp.notes
    rows, bad = read_result_rows(folder)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and bad == 1, (rows, bad)
    assert read_result_rows(folder / "nowhere") == ([], 0)


def test_several_experiments_merge_with_experiment_column(builder):
    a, b = builder("first"), builder("second")
    a.trial("eeee0001", HEALTHY, test_acc=0.9)
    b.trial("eeee0001", HEALTHY, test_acc=0.8)  # same id in both: keys must stay unique
    b.trial("eeee0002", HEALTHY, test_acc=0.7)
    exp = load_experiments([a.path, b.path])
    assert set(exp.trials["experiment"]) == {"first", "second"}, "experiment column missing"
    assert exp.trials["trial"].is_unique, f"trial keys collide: {list(exp.trials['trial'])}"
    assert "first/eeee0001" in exp.predictions, f"prediction keys: {list(exp.predictions)}"


def test_not_an_experiment_folder_names_inner_experiments(builder, tmp_path):
    builder("inner").trial("ffff0001", HEALTHY)
    with pytest.raises(AnalysisError, match="not an experiment folder.*inner"):
        load_experiments([tmp_path])


@pytest.mark.parametrize("case", ["empty", "no_epochs"])
def test_unusable_experiments_raise_one_error(builder, case):
    exp_dir = builder()
    if case == "no_epochs":
        exp_dir.trial("a1a10001", error="ValueError: bad")
    with pytest.raises(AnalysisError, match="no trials yet" if case == "empty" else "reported an epoch"):
        load_experiments([exp_dir.path])


def test_bad_predictions_file_is_a_note(builder):
    exp_dir = builder()
    probs, labels = predictions_with_accuracy(0.9)
    exp_dir.trial("a2a20001", HEALTHY, predictions=(probs, labels[:10]))
    exp = load_experiments([exp_dir.path])
    assert not exp.predictions, "mismatched shapes must not load"
    assert any("a2a20001" in n and "probs must be" in n for n in exp.notes), exp.notes


def test_newest_experiment_is_most_recently_modified(builder, tmp_path):
    old, new = builder("old"), builder("new")
    old.trial("a3a30001", HEALTHY)
    new.trial("a3a30002", HEALTHY)
    os.utime(old.path, (1e9, 1e9))
    for p in old.path.iterdir():
        os.utime(p, (1e9, 1e9))
    assert newest_experiment(tmp_path).name == "new", "did not pick the newest folder"
    with pytest.raises(AnalysisError, match="does not exist"):
        newest_experiment(tmp_path / "missing")


def test_retried_trial_that_finished_is_completed_with_note(builder):
    exp_dir = builder()
    folder = exp_dir.trial("bbbb0001", HEALTHY, test_acc=0.9)
    (folder / "error.txt").write_text("Failure # 1\nRuntimeError: node died\n")
    exp = load_experiments([exp_dir.path])
    assert _status(exp, "bbbb0001") == "COMPLETED", "test metrics after a failure: it finished"
    assert any("bbbb0001" in n and "retried" in n for n in exp.notes), exp.notes


def test_missing_search_file_assumes_val_acc_max(builder):
    exp_dir = builder(meta=False)
    exp_dir.trial("bbbb0001", HEALTHY, test_acc=0.9)
    exp = load_experiments([exp_dir.path])
    assert (exp.meta["metric"], exp.meta["mode"]) == ("val_acc", "max"), exp.meta
    assert any("tl_search.json" in n for n in exp.notes), exp.notes


def _write_ray_state(exp_dir, statuses):
    trial_data = [[json.dumps({"trial_id": t, "status": s}), "{}"] for t, s in statuses.items()]
    (exp_dir.path / "experiment_state-2026-11-23_10-00-00.json").write_text(
        json.dumps({"trial_data": trial_data, "runner_data": {}, "stats": {}}))


def test_error_file_of_a_retried_trial_defers_to_ray(builder):
    exp_dir = builder()
    for trial_id, ray_status in (("bbbb0001", "RUNNING"), ("bbbb0002", "ERROR"),
                                 ("bbbb0003", "TERMINATED")):
        exp_dir.trial(trial_id, HEALTHY, epochs_run=4, done=False, error=None)
        folder = next(exp_dir.path.glob(f"*_{trial_id}_*"))
        (folder / "error.txt").write_text("Failure # 1\nRuntimeError: node died\n")
    exp_dir.trial("bbbb0004", error="RuntimeError: boom")  # not in the state file
    _write_ray_state(exp_dir, {"bbbb0001": "RUNNING", "bbbb0002": "ERROR",
                               "bbbb0003": "TERMINATED"})
    exp = load_experiments([exp_dir.path])
    expected = {"bbbb0001": "RUNNING", "bbbb0002": "ERROR", "bbbb0003": "STOPPED",
                "bbbb0004": "ERROR"}
    for trial_id, status in expected.items():
        assert _status(exp, trial_id) == status, f"{trial_id}: got {_status(exp, trial_id)}"


@pytest.mark.parametrize("folder, trial_id", [
    ("train_transfer_1a2b3c4d_3_backbone=resnet18,lr=0.001_2026-11-23_10-01-02", "1a2b3c4d"),
    ("train_transfer_1a2b3_00002_2_backbone=resnet18_2026-11-23_10-01-02", "1a2b3_00002"),
    ("1a2b3c4d_convmodel_none_none", "1a2b3c4d"),  # tl's own trial folder names
])
def test_trial_id_from_folder_name_of_a_trial_without_results(builder, folder, trial_id):
    exp_dir = builder()
    exp_dir.trial("bbbb0001", HEALTHY, test_acc=0.9)
    errored = exp_dir.trial("cafe0002", error="RuntimeError: boom")
    errored.rename(errored.parent / folder)
    exp = load_experiments([exp_dir.path])
    keys = list(exp.trials["trial"])
    assert trial_id in keys, f"id not parsed from {folder}: {keys}"
