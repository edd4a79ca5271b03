"""The few predicates and the one error message every parameter check in decoding/ uses.

A leaf module (imports nothing from the package), so that params.py, param_checks.py, hooks.py,
resolution.py and the processors that validate their own settings (guidance, watermark) share them
without an import cycle: param_checks.py imports the processors package, so the processors cannot import it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check(condition: bool, name: str, value: Any, allowed: str) -> None:
    """ValueError naming the parameter, the value and what is allowed, unless `condition` holds."""
    if not condition:
        raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


def is_int(value: Any) -> bool:
    """An integer (Python's or numpy's), not a bool: True is not a count nor a token id."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_plain_number(value: Any) -> bool:
    """A Python int or float, not a bool (what a keyword argument or a Hydra value gives)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Any real number (numpy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_real(value: Any) -> bool:
    return is_real(value) and math.isfinite(value)
