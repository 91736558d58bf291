"""Experiments from before ``tl/`` moved into sub-packages still resume: Ray pickled our objects into
them by their old module paths (``tl.console``, ``tl.space``), and ``tl._moved`` resolves those to
the modules that hold them now, as the same module objects."""
from __future__ import annotations

import importlib
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import tl
from tl._moved import MOVED

PRE_MOVE = Path(__file__).resolve().parent / "pre_move_experiment"


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_each_old_module_path_is_the_new_module(old: str, new: str):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert sys.modules[old].__name__ == new and sys.modules[old].__spec__.name == new, \
        "the module keeps its own name and spec (pickling by reference writes the new path)"


def test_a_pre_move_tuner_and_searcher_state_unpickle_as_todays_classes():
    from tl.search.console import LiveView
    from tl.search.space import SpaceSampler

    with open(PRE_MOVE / "tuner.pkl", "rb") as f:
        tuner_state = pickle.load(f)
    with open(PRE_MOVE / "searcher-state.pkl", "rb") as f:
        searcher_state = pickle.load(f)
    callbacks = tuner_state["_run_config"].callbacks
    assert any(type(cb) is LiveView for cb in callbacks), callbacks
    assert type(searcher_state["_space"]) is SpaceSampler
    # The trial folder namer was pickled by value (the old tl/search.py ran as __main__): it still names.
    name = tuner_state["_tune_config"].trial_dirname_creator(
        SimpleNamespace(trial_id="abc", config={"backbone": "timm/x", "weights": "none", "freeze": "fc"}))
    assert name == "abc_timm-x_none_fc"


def test_an_unknown_tl_module_still_fails_to_import():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tl.no_such_module")
    assert tl.TLError  # the package itself imports as before
