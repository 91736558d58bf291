"""Read the folders a transfer-learning search leaves and turn them into tables, plots and a report.

Only reads result folders: it never trains, needs no GPU and imports nothing from ``tl``.
Entry point: ``python -m analysis.summarize [EXPERIMENT_DIR ...]``.
"""

from __future__ import annotations

from analysis.errors import AnalysisError

__all__ = ["AnalysisError"]
