"""tl: transfer-learning recipe search for medical images (Ray Tune + Optuna + ASHA).

Sub-packages by job, each importing only those below it: ``tl.search`` and ``tl.use`` on top,
``tl.train``, then ``tl.data``, then ``tl.core`` (the rules the report shares; no torch, no Ray).
"""
from tl import _moved
from tl.core.errors import TLError

__all__ = ["TLError"]
_moved.install()  # experiments and code from before the sub-packages still find tl.console, tl.models, ...


def __getattr__(name: str):
    """``tl.load_bundle``, imported on first use: ``import tl`` stays free of torch."""
    if name == "load_bundle":
        from tl.use.bundle import load_bundle
        return load_bundle
    raise AttributeError(f"module 'tl' has no attribute {name!r}")
