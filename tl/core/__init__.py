"""The core layer: what ``tl`` and ``analysis`` share, with neither torch nor Ray.

Errors, the task table, metrics, bootstrap statistics, calibration, the rule of choice, the
finalists' recipe logic, and ``results``: the one owner of the experiment folder's format.
``analysis`` imports only this layer; nothing here imports the rest of ``tl`` (an import-linter
contract in ``pyproject.toml``, checked by the suite, holds both).
"""
from tl.core.errors import TLError

__all__ = ["TLError"]
