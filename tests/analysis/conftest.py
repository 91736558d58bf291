"""Fixtures of the analysis tests: experiment folders built by analysis_builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from analysis_builders import HEALTHY, OVERFIT, SHIFT, UNDERFIT, UNSTABLE, ExperimentBuilder


@pytest.fixture
def builder(tmp_path: Path):
    """Return a factory: ``builder(name="exp", meta=True)`` -> :class:`ExperimentBuilder`."""
    def make(name: str = "exp", **kw: Any) -> ExperimentBuilder:
        return ExperimentBuilder(tmp_path, name, **kw)
    return make


@pytest.fixture
def diagnosis_experiment(builder) -> ExperimentBuilder:
    """One experiment with a trial per verdict, an ASHA-stopped trial and an errored one."""
    exp = builder("verdicts")
    exp.trial("aaaa0001", HEALTHY, test_acc=0.89, backbone="resnet18", freeze="none")
    exp.trial("aaaa0002", OVERFIT, test_acc=0.83, backbone="resnet18", freeze="backbone")
    exp.trial("aaaa0003", UNDERFIT, test_acc=0.55, backbone="convmodel", weights="none")
    exp.trial("aaaa0004", UNSTABLE, test_acc=0.88, backbone="convmodel", weights="none", lr=3e-3)
    exp.trial("aaaa0005", SHIFT, test_acc=0.75, backbone="resnet18", weights="IMAGENET1K_V2")
    exp.trial("aaaa0006", HEALTHY, epochs_run=3, backbone="timm/efficientnet_lite0",
              weights="IMAGENET1K_PYPI")
    exp.trial("aaaa0007", error="RuntimeError: CUDA out of memory", backbone="resnet18",
              batch_size=512)
    return exp
