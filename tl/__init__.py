"""tl: transfer-learning recipe search for medical images (Ray Tune + Optuna + ASHA)."""
from tl.errors import TLError

__all__ = ["TLError"]
