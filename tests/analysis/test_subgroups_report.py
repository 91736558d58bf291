"""The report's subgroup section (issue 29): from an experiment folder's test_subgroups.csv, the
recommended model is scored per subgroup; the subgroup it fails is named as flagged, the tiny one is
listed and not flagged; a folder searched without subgroups shows no such section."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from analysis_builders import HEALTHY, LABELS, N_TEST, predictions_from_correct

from analysis.report import render_markdown, report_sections
from analysis.report_data import build_report_data
from analysis.subgroups_section import TITLE
from tl.core.results.files import SUBGROUPS_FILE
from tl.core.subgroups import IMAGE_COLUMN, META_KEY


def _sites() -> np.ndarray:
    """Site A 120 images, B 60, C 20, each holding both classes."""
    return np.random.default_rng(3).permutation(np.repeat(["A", "B", "C"], [120, 60, 20]))


@pytest.fixture
def scored(builder):
    """One tested trial, right on 95 % of site A, 40 % of site B and none of site C."""
    sites = _sites()
    rng = np.random.default_rng(4)
    rate = np.select([sites == "A", sites == "B"], [0.95, 0.40], 0.0)
    correct = rng.random(N_TEST) < rate
    exp = builder("sub")
    exp.trial("aaaa0001", HEALTHY, test_acc=float(correct.mean()), predictions=predictions_from_correct(correct))
    return exp, sites


def test_the_report_names_the_failed_subgroup_and_lists_the_tiny_one(scored):
    exp, sites = scored
    pd.DataFrame({IMAGE_COLUMN: [f"img{i}.png" for i in range(N_TEST)], "site": sites}).to_csv(
        exp.path / SUBGROUPS_FILE, index=False)
    meta = json.loads((exp.path / "tl_search.json").read_text())
    meta[META_KEY] = {"columns": ["site"], "sources": {"site": {"source": "table column 'site'", "order": None}}}
    (exp.path / "tl_search.json").write_text(json.dumps(meta))

    data = build_report_data([exp.path], n_resamples=200)
    frame = data.subgroups.frame.set_index("subgroup")
    assert frame["images"].sum() == N_TEST and frame.loc["C", "positives"] == int((LABELS[sites == "C"] == 1).sum())
    assert frame.loc["B", "flagged"] and not frame.loc["A", "flagged"], frame[["flagged", "worse_than_overall"]]
    assert not frame.loc["C", "flagged"] and "listed, not flagged" in frame.loc["C", "note"]
    assert "test_acc" in frame.loc["C", "worse_than_overall"], "C is worse, but 20 images are too few to flag"

    section = next(s for s in report_sections(data) if s.title == TITLE)
    text = " ".join(section.paragraphs)
    assert "Flagged: site = B (60 images" in text and "site = C" not in text.split("Flagged:")[1], text
    assert "under 30 images or 5 positives" in text
    table = section.tables[0][1]
    assert table["subgroup"].tolist() == ["A", "B", "C"] and table["flagged"].tolist()[1].startswith("yes")
    assert f"## {TITLE}" in render_markdown(report_sections(data), {}, "t")


def test_a_search_without_subgroups_shows_no_section(scored):
    exp, _ = scored
    data = build_report_data([exp.path], n_resamples=50)
    assert data.subgroups is None
    assert TITLE not in [s.title for s in report_sections(data)]
