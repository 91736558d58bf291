"""The uncertain-label policy, in one place: what a multilabel trial trains on where the labeler
could not decide a finding (CheXpert's -1).

The policies are CheXpert's U-Ignore, U-Zeros and U-Ones: ``ignore`` keeps -1 (the loss and every
metric mask it), ``zeros`` reads it as 0, ``ones`` as 1. Only training labels follow the policy;
val and test always leave -1 out. A trial carries its policy as the plain string ``config["uncertain"]``
(Ray configs are JSON); a space pins it in ``FIXED`` or searches it in ``PARAMS`` under that key, and
:func:`space_policy` reads it back, for the console, the report and the trial alike. Pure numpy.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from tl.core.errors import TLError

UNCERTAIN = -1  # the label value of an undecided finding
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")  # CheXpert's U-Ignore, U-Zeros, U-Ones
DEFAULT_POLICY = "ignore"
POLICY_KEY = "uncertain"  # the trial-config key (and PARAMS / FIXED / --set key) that holds the policy
_REPLACEMENT = {"zeros": 0, "ones": 1}  # what each policy other than ignore writes over -1


def check_policy(policy, where: str = "uncertain-label policy") -> str:
    """Return ``policy`` if it is one of ``UNCERTAIN_POLICIES``.

    Raises:
        TLError: it is not; the message starts with ``where`` and lists the policies.
    """
    if policy not in UNCERTAIN_POLICIES:
        raise TLError(f"{where}: must be one of {', '.join(UNCERTAIN_POLICIES)}, got {policy!r}")
    return policy


def apply_uncertain(labels: np.ndarray, policy: str) -> np.ndarray:
    """Return a copy of multilabel ``labels`` with the uncertain (-1) cells handled by ``policy``.

    ``ignore`` keeps -1 (the loss and metrics mask it), ``zeros`` makes it 0, ``ones`` makes it 1.

    Raises:
        TLError: ``policy`` is not one of ``UNCERTAIN_POLICIES``.
    """
    check_policy(policy)
    out = np.array(labels, copy=True)
    if policy in _REPLACEMENT:
        out[out == UNCERTAIN] = _REPLACEMENT[policy]
    return out


def space_policy(params: Mapping, fixed: Mapping, default: str | None = DEFAULT_POLICY) -> str | list | None:
    """The policy a space's trials train with: the choices ``params`` searches over (a list), else the
    one ``fixed`` pins (where ``--uncertain``, ``UNCERTAIN`` and ``--set`` put it), else ``default``."""
    return params.get(POLICY_KEY) or fixed.get(POLICY_KEY) or default
