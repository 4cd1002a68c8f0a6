"""The pi estimate and its uncertainty (pure math, no I/O).

Each dart lands inside the quarter circle with probability p = pi/4, so with K of N inside the
estimate is 4*K/N, with standard error 4*sqrt(p*(1-p)/N) (binomial, p estimated by K/N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

Z95: Final = 1.959963984540054
"""Two-sided 95 % quantile of the standard normal distribution."""
P_INSIDE: Final = math.pi / 4
"""Probability that a uniform dart lands inside the circle."""


def half_width_95(p: float, darts: float) -> float:
    """Half-width of the 95 % interval of 4 * K / N: ``1.96 * 4 * sqrt(p (1 - p) / N)``.

    The one confidence band of the project: the summary uses the observed ``p = K / N``, the
    convergence plot the true ``p = pi / 4`` (it shrinks as ``1/sqrt(N)``).
    """
    return Z95 * 4.0 * math.sqrt(p * (1.0 - p) / darts)


@dataclass(frozen=True, slots=True)
class Estimate:
    """pi estimated from ``inside`` of ``darts`` darts."""

    darts: int
    inside: int
    pi: float
    abs_error: float
    std_error: float
    ci95: tuple[float, float]


def estimate(inside: int, darts: int) -> Estimate:
    """Return the estimate of pi from ``inside`` hits out of ``darts`` (``darts`` > 0)."""
    if darts <= 0 or not 0 <= inside <= darts:
        raise ValueError(f"need 0 <= inside <= darts and darts > 0, got {inside}/{darts}")
    p = inside / darts
    pi = 4.0 * p
    std_error = 4.0 * math.sqrt(p * (1.0 - p) / darts)
    half = half_width_95(p, darts)
    return Estimate(
        darts=darts,
        inside=inside,
        pi=pi,
        abs_error=abs(pi - math.pi),
        std_error=std_error,
        ci95=(pi - half, pi + half),
    )
