"""Filters that validate run_pi.yml's values exactly like `pi-job run` does (one-line errors)."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

# Same forms and limits as pi_job.core.envelope (parse_count, RUN_ID_PATTERN, MAX_*).
_COUNT_RE = re.compile(r"[0-9](?:_?[0-9])*(?:\.[0-9](?:_?[0-9])*)?(?:[eE]\+?[0-9]{1,3})?")
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_INT_RE = re.compile(r"[+-]?[0-9]+")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, float):
        # 1e9 given as JSON/YAML float: accept only exact integers.
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def pi_count_error(value: object, name: str, maximum: int, minimum: int = 1) -> str:
    """Return '' when value is an exact integer count in range, else a one-line reason."""
    text = _text(value).strip()
    if not _COUNT_RE.fullmatch(text):
        return f'{name}: not a count: "{text}" (use e.g. 1000000, 1e9, 1_000_000, 2.5e9)'
    try:
        number = Decimal(text.replace("_", ""))
    except InvalidOperation:
        return f'{name}: not a count: "{text}"'
    if number != number.to_integral_value():
        return f'{name}: not a whole number: "{text}"'
    if not minimum <= int(number) <= maximum:
        return f'{name}: "{text}" is out of range {minimum}..{maximum}'
    return ""


def pi_count(value: object) -> int:
    """The integer of a count already checked with pi_count_error."""
    return int(Decimal(_text(value).strip().replace("_", "")))


def pi_int_error(value: object, name: str, minimum: int, maximum: int) -> str:
    """Return '' when value is a plain decimal integer in range, else a one-line reason."""
    text = _text(value).strip()
    if not _INT_RE.fullmatch(text):
        return f'{name}: not an integer: "{text}"'
    if not minimum <= int(text) <= maximum:
        return f"{name}: {int(text)} is out of range {minimum}..{maximum}"
    return ""


def pi_seconds_error(value: object, name: str, minimum: float, maximum: float) -> str:
    """Return '' when value is a finite number of seconds in range, else a one-line reason."""
    text = _text(value).strip()
    try:
        number = float(text)
    except ValueError:
        return f'{name}: not a number of seconds: "{text}"'
    if math.isnan(number) or not minimum <= number <= maximum:
        return f'{name}: "{text}" is out of range {minimum:g}..{maximum:g}'
    return ""


def pi_run_id_error(value: object, name: str = "run_id") -> str:
    """Return '' when value is a valid run id, else a one-line reason."""
    text = _text(value)
    if not isinstance(value, str) or not _RUN_ID_RE.fullmatch(text):
        return f'{name}: invalid run id "{text}" (expected {_RUN_ID_RE.pattern})'
    return ""


class FilterModule:
    """pi_run value checks."""

    def filters(self) -> dict[str, object]:
        return {
            "pi_count": pi_count,
            "pi_count_error": pi_count_error,
            "pi_int_error": pi_int_error,
            "pi_seconds_error": pi_seconds_error,
            "pi_run_id_error": pi_run_id_error,
        }
