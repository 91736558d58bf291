"""The report's "Split audit" section: counts from tl_search.json, thumbnails from split_audit.npz."""

from __future__ import annotations

import json

import numpy as np
from analysis_builders import HEALTHY

from tl.core.results.split_audit import read_split_audits
from analysis.summarize import main
from tl.data.audit import audit_splits, save_pairs
from tl.core.results import AUDIT_FILE


def test_split_audit_section_shows_counts_warning_and_pairs(builder, capsys):
    exp = builder("audited")
    exp.trial("e1e10001", HEALTHY, test_acc=0.9)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (30, 1, 16, 16), dtype=np.uint8)
    test = rng.integers(0, 256, (10, 1, 16, 16), dtype=np.uint8)
    test[3] = train[4]
    names = {"train": [f"train/person{i // 2}_virus_{i}.jpeg" for i in range(30)]}
    record, pairs = audit_splits({"train": train, "val": train[:0], "test": test}, names=names)
    meta = json.loads((exp.path / "tl_search.json").read_text())
    meta["dataset"]["split"] = {"groups": {"source": "regex (p\\d+)", "unmatched_files": 2,
                                           "splits": {"train": {"n_groups": 15, "n_images": 30}}}}
    (exp.path / "tl_search.json").write_text(json.dumps({**meta, "split_audit": record}))
    save_pairs(exp.path / AUDIT_FILE, pairs)

    audit = read_split_audits([exp.path])[0]
    assert audit.counts.set_index("splits").loc["train / test", "exact duplicate pairs"] == 1
    assert audit.counts["groups in both"].tolist() == ["unknown"], "no grouping is not zero overlap"
    assert audit.pairs["thumb_a"].shape == (1, 64, 64)

    assert main([str(exp.path)]) == 0, capsys.readouterr().err
    md = (exp.path / "summary" / "summary.md").read_text()
    section = md.split("## Split audit")[1].split("\n## ")[0]
    assert "Warning" in section and "--groups" in section, section
    assert "train 15 groups / 30 images; 2 files matched no group" in section, section
    assert "duplicate_pairs.png" in section and (exp.path / "summary" / "duplicate_pairs.png").is_file()
    assert "Split audit" in (exp.path / "summary" / "report.html").read_text()


def test_experiment_without_an_audit_says_so(builder, capsys):
    exp = builder("old")
    exp.trial("e2e20001", HEALTHY, test_acc=0.9)
    assert read_split_audits([exp.path]) == []
    assert main([str(exp.path)]) == 0
    assert "No split audit recorded" in (exp.path / "summary" / "summary.md").read_text()
