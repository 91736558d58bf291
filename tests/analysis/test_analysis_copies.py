"""A test split that is mostly copies of train (issue 29 item 5): the recommended model's lines say
plainly that test cannot estimate performance on new images, and give its figures on the test
images without a copy, beside the full split's."""
from __future__ import annotations

import numpy as np
from analysis_builders import HEALTHY, N_TEST

from analysis.summarize import main
from tl.core.results import AUDIT_FILE


def _with_copies(builder, copied: np.ndarray):
    exp = builder("copies")
    labels = np.arange(N_TEST) % 2
    probs = np.full((N_TEST, 2), 0.2)
    right = np.zeros(N_TEST, dtype=bool)
    right[copied] = True  # the model is right on every copy of a train image, wrong on the rest
    probs[np.arange(N_TEST), np.where(right, labels, 1 - labels)] = 0.8
    exp.trial("c0c0c001", HEALTHY, test_acc=float(right.mean()), predictions=(probs, labels))
    np.savez(exp.path / AUDIT_FILE, train_copies_test=copied.astype(np.int64))
    return exp


def test_mostly_copied_test_split_is_said_plainly_with_figures_on_the_rest(builder, capsys):
    copied = np.arange(N_TEST - 20)  # 180 of 200 test images copy train
    exp = _with_copies(builder, copied)
    assert main([str(exp.path)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"warning: {len(copied)} of {N_TEST} test images are exact or near copies of train images" in printed
    line = next(l for l in printed.splitlines() if "test images without a copy in train" in l)
    assert line.strip().startswith(f"on the 20 test images without a copy in train ({len(copied)} have one): acc 0.000 ")
    html = (exp.path / "summary" / "report.html").read_text()
    first_screen = html.split("Calibration")[0]
    assert "cannot estimate performance on new images" in first_screen and "without a copy in train" in first_screen


def test_a_few_copies_give_the_figures_on_the_rest_without_the_warning(builder, capsys):
    exp = _with_copies(builder, np.array([3, 7]))
    assert main([str(exp.path)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "cannot estimate" not in printed
    assert "on the 198 test images without a copy in train (2 have one): acc 0.000 " in printed
