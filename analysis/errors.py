"""The one exception type the analysis raises for bad input; the CLI turns it into one line."""

from __future__ import annotations


class AnalysisError(Exception):
    """Input the analysis cannot use: not an experiment folder, no results, a bad option."""
