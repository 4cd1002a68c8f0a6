"""Filters that validate playbook values exactly like `pi-job run` does (one-line errors).

The forms, limits and messages are those of pi_job's own `limits.py` (standard library only),
loaded from the repository's pi_job/src, so that the controller checks a value the same way
the CLI does before anything is queued.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_SRC = Path(__file__).resolve().parents[3] / "pi_job" / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from pi_job import limits


def _text(value: object) -> str:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, float):
        # 1e9 given as JSON/YAML float: accept only exact integers.
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _limit(value: object) -> Any:
    """A number, or the name of a constant of limits.py (e.g. 'MAX_DARTS')."""
    return getattr(limits, value) if isinstance(value, str) else value


def _error(name: str, check: Any, *args: Any) -> str:
    try:
        check(*args)
    except limits.InvalidValueError as exc:
        return f"{name}: {exc}"
    return ""


def pi_count_error(value: object, name: str, maximum: object, minimum: int = 1) -> str:
    """Return '' when value is an exact integer count in range, else a one-line reason."""
    return _error(name, limits.parse_count, _text(value), _limit(maximum), minimum)


def pi_count(value: object) -> int:
    """The integer of a count already checked with pi_count_error."""
    return limits.parse_count(_text(value), limits.MAX_DARTS, 0)


def pi_int_error(value: object, name: str, minimum: object, maximum: object) -> str:
    """Return '' when value is a plain decimal integer in range, else a one-line reason."""
    return _error(
        name, limits.parse_int, _text(value), _limit(minimum), _limit(maximum)
    )


def pi_seconds_error(value: object, name: str, minimum: float, maximum: float) -> str:
    """Return '' when value is a finite number of seconds in range, else a one-line reason."""
    return _error(name, limits.parse_seconds, _text(value), minimum, maximum)


def pi_run_id_error(value: object, name: str = "run_id") -> str:
    """Return '' when value is a valid run id, else a one-line reason."""
    if not isinstance(value, str):
        return f'{name}: invalid run id "{_text(value)}" (expected {limits.RUN_ID_PATTERN})'
    return _error(name, limits.check_run_id, value)


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def pi_bool_error(value: object, name: str) -> str:
    """Return '' when value is a boolean (true/false, yes/no, on/off, 1/0), else a one-line reason."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return ""
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return ""
    return f'{name}: not a boolean: "{" ".join(_text(value).split())}" (true or false)'


def pi_bool(value: object) -> bool:
    """The boolean of a value already checked with pi_bool_error."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def pi_new_run_id(prefix: str = "") -> str:
    """A fresh run id, made as `pi-job run` makes them."""
    return limits.new_run_id(prefix)


def pi_beanstalkd_sizes(max_body: object) -> list[int]:
    """beanstalkd's [-z, -s] for job bodies of up to max_body bytes."""
    return list(limits.beanstalkd_sizes(int(str(max_body))))


class FilterModule:
    """pi_run value checks."""

    def filters(self) -> dict[str, object]:
        return {
            "pi_beanstalkd_sizes": pi_beanstalkd_sizes,
            "pi_bool": pi_bool,
            "pi_bool_error": pi_bool_error,
            "pi_count": pi_count,
            "pi_count_error": pi_count_error,
            "pi_int_error": pi_int_error,
            "pi_new_run_id": pi_new_run_id,
            "pi_seconds_error": pi_seconds_error,
            "pi_run_id_error": pi_run_id_error,
        }
