"""Old module paths, kept importable after ``tl/`` was laid out in sub-packages (2026-12).

Ray pickles some of our objects by module path into an experiment folder (``tuner.pkl``, the
searcher's state): ``tl.console.LiveView`` and ``tl.space.SpaceSampler`` in searches made before
the move. ``--resume`` and ``analysis.summarize`` of those folders unpickle them, and user code may
still import ``tl.models``. Each old name resolves to the module that now holds it, the same module
object, so pickled classes and functions are the current ones.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "tl.space": "tl.search.space",
    "tl.console": "tl.search.console",
    "tl.finalist_stage": "tl.search.finalist_stage",
    "tl.trainable": "tl.train.trainable",
    "tl.models": "tl.train.models",
    "tl.weights": "tl.train.weights",
    "tl.feature_cache": "tl.train.feature_cache",
    "tl.config": "tl.train.config",
    "tl.inference": "tl.train.inference",
    "tl.bundle": "tl.use.bundle",
    "tl.gradcam": "tl.use.gradcam",
    "tl.onnx_export": "tl.use.onnx_export",
    "tl.data.table": "tl.data.label_table",
    "tl.data.tabular": "tl.data.table_source",
    "tl.data.load": "tl.data.dataset",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and loads it as the module now at its new path (no second copy)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system stamps the old name's spec on it next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # give the module its own spec back


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
