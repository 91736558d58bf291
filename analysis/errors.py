"""The analysis's exception for bad input: a ``TLError`` (the one error type of tl's core layer), so
``analysis.summarize`` turns it and the core's errors into one ``error:`` line alike."""

from __future__ import annotations

from tl.core.errors import TLError


class AnalysisError(TLError):
    """Input the analysis cannot use: not an experiment folder, no results, a bad option."""
