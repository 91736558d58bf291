"""Read the folders a transfer-learning search leaves and turn them into tables, plots and a report.

Only reads result folders: it never trains and needs no GPU. It imports only ``tl.core`` (no torch,
no Ray), never the rest of ``tl``; the contract is in ``pyproject.toml`` and the suite checks it.
Entry point: ``python -m analysis.summarize [EXPERIMENT_DIR ...]``.
"""

from __future__ import annotations

from analysis.errors import AnalysisError

__all__ = ["AnalysisError"]
