"""The search: ``python -m tl.search SPACE.py`` (``cli``) reads a space file (``space``), runs a Ray
Tune search over it with Optuna sampling and ASHA, prints as it goes (``console``), re-trains the
top recipes over seeds (``finalist_stage``) and names the recommended model.

Nothing is imported here, so ``tl.search.space`` costs no torch or Ray import.
"""


def __getattr__(name: str):
    """``tl.search.main``, what ``python -m tl.search`` runs, imported on first use."""
    if name == "main":
        from tl.search.cli import main
        return main
    raise AttributeError(f"module 'tl.search' has no attribute {name!r}")
