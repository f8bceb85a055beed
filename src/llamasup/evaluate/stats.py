"""Paired comparisons of two targets on the same questions, with a stated confidence.

- Right/wrong scores: McNemar's exact test. Only the discordant questions count (``b``: A
  right and B wrong, ``c``: the reverse); under "no difference" each is a fair coin, so the
  two-sided p-value is a binomial tail. The same test on wins and losses is the sign test
  for a judge's pairwise verdicts (ties dropped).
- Any scores: a paired bootstrap interval for the mean difference (questions resampled with
  replacement, percentile interval, a fixed seed so a report is reproducible).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


def binomial_two_sided(successes: int, trials: int) -> float:
    """P(a result at least this lopsided) for a fair coin, two-sided (exact)."""
    if trials == 0:
        return 1.0
    low = min(successes, trials - successes)
    tail: float = sum(math.comb(trials, k) for k in range(low + 1)) / 2**trials
    return min(1.0, 2.0 * tail)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact p-value from the discordant counts (A right only, B right only)."""
    return binomial_two_sided(a_only, a_only + b_only)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    level: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level}


def bootstrap_mean(
    values: Sequence[float], *, resamples: int = 4000, level: float = 0.95, seed: int = 0
) -> Interval:
    """The mean of ``values`` (paired differences) with a percentile bootstrap interval."""
    if not values:
        return Interval(0.0, 0.0, 0.0, level)
    rng = random.Random(seed)  # noqa: S311 - resampling, not a secret
    count = len(values)
    means = sorted(
        sum(values[rng.randrange(count)] for _ in range(count)) / count for _ in range(resamples)
    )
    tail = (1 - level) / 2
    low = means[int(tail * (resamples - 1))]
    high = means[math.ceil((1 - tail) * (resamples - 1))]
    return Interval(sum(values) / count, low, high, level)


@dataclass(frozen=True)
class Comparison:
    """B against A on the questions both answered."""

    baseline: str
    challenger: str
    questions: int
    #: discordant counts: A right and B wrong; B right and A wrong (or judge losses, wins)
    a_only: int
    b_only: int
    ties: int
    p_value: float
    #: mean score difference B - A (or B's mean preference - 0.5 for a judge)
    difference: Interval

    def verdict(self, alpha: float = 0.05) -> str:
        if self.questions == 0:
            return "nothing to compare"
        if self.p_value < alpha and self.difference.excludes_zero():
            better = self.challenger if self.difference.estimate > 0 else self.baseline
            return f"{better} is better (p={self.p_value:.3g})"
        return f"no significant difference (p={self.p_value:.3g})"

    def as_dict(self) -> dict[str, object]:
        return {
            "baseline": self.baseline,
            "challenger": self.challenger,
            "questions": self.questions,
            "a_only": self.a_only,
            "b_only": self.b_only,
            "ties": self.ties,
            "p_value": self.p_value,
            "difference": self.difference.as_dict(),
            "verdict": self.verdict(),
        }


def compare_scores(
    baseline: str, challenger: str, pairs: Sequence[tuple[float, float]]
) -> Comparison:
    """Paired scores (A's, B's) of the same questions: McNemar on right/wrong when the scores
    are 0/1, and a bootstrap interval for the mean of B - A."""
    a_only = sum(1 for a, b in pairs if a > b)
    b_only = sum(1 for a, b in pairs if b > a)
    ties = len(pairs) - a_only - b_only
    interval = bootstrap_mean([b - a for a, b in pairs])
    return Comparison(
        baseline,
        challenger,
        len(pairs),
        a_only,
        b_only,
        ties,
        mcnemar_exact(a_only, b_only),
        interval,
    )
