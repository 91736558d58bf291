"""The command line: files written, terminal tables, one-line errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from analysis_builders import HEALTHY, OVERFIT

from analysis.summarize import main

REPO = Path(__file__).resolve().parents[2]
EXPECTED_FILES = ["summary.csv", "summary.parquet", "trials.csv", "groups.csv", "comparisons.csv", "chosen.csv",
                  "diagnostics.csv", "summary.md", "report.html", "curves_top.png",
                  "curves_groups.png", "accuracy_vs_time.png", "epochs_run.png", "importance.png",
                  "roc.png", "confusion.png"]


def _full_experiment(builder):
    exp = builder("full")
    exp.trial("a7a70001", HEALTHY, test_acc=0.89, lr=1e-3)
    exp.trial("a7a70002", OVERFIT, test_acc=0.83, freeze="backbone", lr=3e-3)
    exp.trial("a7a70003", HEALTHY, test_acc=0.80, backbone="convmodel", weights="none", lr=1e-2)
    exp.trial("a7a70004", HEALTHY, test_acc=0.86, weights="IMAGENET1K_V2", lr=2e-4)
    exp.trial("a7a70005", HEALTHY, epochs_run=3, lr=5e-2)
    exp.trial("a7a70006", error="RuntimeError: boom")
    return exp


def test_writes_every_output_and_prints_tables(builder, capsys):
    exp = _full_experiment(builder)
    assert main([str(exp.path), "--top", "3"]) == 0, capsys.readouterr().err
    out_dir = exp.path / "summary"
    missing = [f for f in EXPECTED_FILES if not (out_dir / f).is_file()]
    assert not missing, f"not written: {missing}"
    tidy = pd.read_csv(out_dir / "summary.csv")
    assert len(tidy) == 4 * 10 + 3, f"tidy frame rows: {len(tidy)}"
    trials = pd.read_csv(out_dir / "trials.csv").set_index("trial")
    assert trials.loc["a7a70002", "best_val_loss_epoch"] == "4/10", "Table 1 cell"
    assert trials.loc["a7a70002", "verdict"] == "overfitting", "verdict in Table 1"
    assert trials.loc["a7a70006", "status"] == "ERROR", "errored trial listed"
    printed = capsys.readouterr().out
    assert "Top 3 trials" in printed and "a7a70001" in printed, printed[:500]
    assert "fine-tune vs fixed extractor" in printed, "comparisons printed"
    assert str(out_dir / "report.html") in printed, "written paths printed"
    markdown = (out_dir / "summary.md").read_text()
    assert "recommended model: trial a7a70001" in printed, "the recommended model printed"
    chosen = pd.read_csv(out_dir / "chosen.csv")
    assert len(chosen) == 1 and chosen.loc[0, "trials"] == "a7a70001"
    assert chosen.loc[0, "test_acc_low"] <= chosen.loc[0, "test_acc"] <= chosen.loc[0, "test_acc_high"]
    for needle in ("| trial |", "OVERFIT_VAL_LOSS_RISE", "![", "McNemar", "## Recommended model", "test acc [95% CI]"):
        assert needle in markdown, f"{needle!r} missing from summary.md"


def test_out_group_by_and_several_experiments(builder, tmp_path, capsys):
    first = _full_experiment(builder)
    second = builder("again")
    second.trial("a8a80001", HEALTHY, test_acc=0.9)
    out = tmp_path / "elsewhere"
    rc = main([str(first.path), str(second.path), "--out", str(out), "--group-by", "experiment,backbone"])
    assert rc == 0, capsys.readouterr().err
    groups = pd.read_csv(out / "groups.csv")
    assert {"experiment", "backbone"} <= set(groups.columns), list(groups.columns)
    assert set(groups["experiment"]) == {"full", "again"}, "merged experiments"


def test_missing_predictions_is_a_note_not_a_crash(builder, capsys):
    exp = builder()
    exp.trial("a9a90001", HEALTHY, test_acc=0.9)
    exp.trial("a9a90002", HEALTHY, test_acc=0.8, predictions_in="none")
    assert main([str(exp.path)]) == 0, "must not fail"
    err = capsys.readouterr().err
    assert "note:" in err and "a9a90002" in err and "test_predictions.npz" in err, err


def _assert_one_line_error(capsys, argv, pattern):
    assert main(argv) == 2, f"{argv} should fail with status 2, as tl.search does for bad input"
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"one-line error expected: {err!r}"
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err, err


def test_bad_input_gives_one_line_errors(builder, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    _assert_one_line_error(capsys, [str(plain)], "not an experiment folder")
    _assert_one_line_error(capsys, [str(tmp_path / "nope")], "does not exist")
    empty = builder("empty")
    _assert_one_line_error(capsys, [str(empty.path)], "no trials yet")
    failed = builder("failed")
    failed.trial("b1b10001", error="RuntimeError: boom")
    _assert_one_line_error(capsys, [str(failed.path)], "reported an epoch")
    good = builder("good")
    good.trial("b1b10002", HEALTHY, test_acc=0.9)
    _assert_one_line_error(capsys, [str(good.path), "--group-by", "colour"], "colour")
    _assert_one_line_error(capsys, [str(good.path), "--top", "0"], "--top")


def test_default_is_newest_experiment_under_results(builder, tmp_path, monkeypatch, capsys):
    exp = builder("results/run1")
    exp.trial("b2b20001", HEALTHY, test_acc=0.9)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0, capsys.readouterr().err
    assert (exp.path / "summary" / "report.html").is_file(), "default --out is <experiment>/summary"
    monkeypatch.chdir(tmp_path / "results")
    _assert_one_line_error(capsys, [], "results does not exist")


def test_module_entry_point_exit_code_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "analysis.summarize", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("argv", [["--help"]])
def test_help_lists_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(o in out for o in ("--out", "--group-by", "--top")), out


def test_multiclass_without_backbone_column(builder, capsys):
    """Three classes and params without backbone/freeze/weights: no crash, sensible defaults."""
    import numpy as np

    from analysis.report_data import build_report_data

    labels = np.repeat(np.arange(3), 20)
    exp = builder("three", meta=False)
    for i in range(3):
        probs = np.eye(3)[np.where(np.arange(60) % (i + 2) == 0, (labels + 1) % 3, labels)]
        folder = exp.trial(f"abc0000{i}", HEALTHY, test_acc=0.9, predictions=(probs, labels), lr=10.0**-i)
        params = folder / "params.json"
        params.write_text(params.read_text().replace('"backbone"', '"arch"'))
    summary = build_report_data([exp.path])
    assert summary.group_by == ["freeze", "weights"], f"default group-by falls back: {summary.group_by}"
    assert "test_sensitivity" not in summary.table.columns, "sensitivity is for two classes only"
    assert all(len(c) == 3 for c in summary.roc.values()), "one-vs-rest ROC per class"
    assert main([str(exp.path)]) == 0, capsys.readouterr().err


def test_unexpected_exception_is_one_error_line_not_a_traceback(builder, monkeypatch, capsys):
    exp = builder("bug")
    exp.trial("b9b90001", HEALTHY, test_acc=0.9)

    def broken(*args, **kwargs):
        raise TypeError("sequence item 3: expected str instance, float found")

    monkeypatch.setattr("analysis.summarize.build_report_data", broken)
    assert main([str(exp.path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unexpected TypeError at test_analysis_cli.py:"), err
    assert "TL_DEBUG=1" in err[0]
