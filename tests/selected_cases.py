"""Module fixtures that run every case of a parametrized CLI test at once need to know which
cases this session selected (after -k and -m), so that they run only those."""
from __future__ import annotations

import pytest


def selected_params(request: pytest.FixtureRequest, test_name: str, param: str) -> list:
    """The values of ``param`` that this session will run ``test_name`` with."""
    return [item.callspec.params[param] for item in request.session.items
            if getattr(item, "originalname", None) == test_name and hasattr(item, "callspec")]
