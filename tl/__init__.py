"""tl: transfer-learning recipe search for medical images (Ray Tune + Optuna + ASHA)."""
from tl.core.errors import TLError

__all__ = ["TLError"]


def __getattr__(name: str):
    """``tl.load_bundle``, imported on first use: ``import tl`` stays free of torch."""
    if name == "load_bundle":
        from tl.bundle import load_bundle
        return load_bundle
    raise AttributeError(f"module 'tl' has no attribute {name!r}")
