"""The eval's summary: accuracy per target (with a Wilson interval) and every target compared
with the first on the questions both answered; for a judged suite, the judge's preferences."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llamasup.evaluate.judge import combined
from llamasup.evaluate.runner import EvalPlan, answer_key, judgement_key
from llamasup.evaluate.stats import Comparison, compare_scores
from llamasup.harness.records import ResultLog
from llamasup.harness.targets import Variant


@dataclass(frozen=True)
class Accuracy:
    variant: Variant
    questions: int
    answered: int
    correct: float
    errors: int
    seconds: float | None

    @property
    def rate(self) -> float | None:
        return None if self.answered == 0 else self.correct / self.answered

    def interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Wilson's 95 % interval for the accuracy."""
        n = self.answered
        if n == 0:
            return None
        p = self.correct / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant.as_dict(),
            "questions": self.questions,
            "answered": self.answered,
            "correct": self.correct,
            "accuracy": self.rate,
            "interval95": self.interval(),
            "errors": self.errors,
            "mean_seconds": self.seconds,
        }


@dataclass(frozen=True)
class Summary:
    accuracy: Sequence[Accuracy]
    comparisons: Sequence[Comparison]
    judged: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": [a.as_dict() for a in self.accuracy],
            "comparisons": [c.as_dict() for c in self.comparisons],
            "judged": self.judged,
        }


def summarize(
    plan: EvalPlan, log: ResultLog, known: Mapping[Variant, Mapping[str, Any]]
) -> Summary:
    suite = plan.suite
    answers = {r["key"]: r for r in log.of_kind("answer")}
    errors = list(log.of_kind("answer-error"))
    rows: list[Accuracy] = []
    scores: dict[Variant, dict[str, float]] = {}
    for variant in plan.variants:
        found = {
            q.id: answers[k]
            for q in suite.questions
            if (k := answer_key(known[variant], suite, q)) in answers
        }
        scores[variant] = {
            qid: float(r["score"]) for qid, r in found.items() if r.get("score") is not None
        }
        seconds = [float(r["seconds"]) for r in found.values() if r.get("seconds") is not None]
        missing = len(suite.questions) - len(found)
        rows.append(
            Accuracy(
                variant,
                len(suite.questions),
                len(scores[variant]) if suite.kind != "judge" else len(found),
                sum(scores[variant].values()),
                min(missing, sum(1 for e in errors if e.get("identity") == known[variant])),
                sum(seconds) / len(seconds) if seconds else None,
            )
        )
    if plan.judge is not None:
        return Summary(rows, _judged(plan, log, known), True)
    base = plan.variants[0]
    comparisons = []
    for other in plan.variants[1:]:
        shared = sorted(set(scores[base]) & set(scores[other]))
        pairs = [(scores[base][q], scores[other][q]) for q in shared]
        comparisons.append(compare_scores(base.name, other.name, pairs))
    return Summary(rows, comparisons, False)


def _judged(
    plan: EvalPlan, log: ResultLog, known: Mapping[Variant, Mapping[str, Any]]
) -> list[Comparison]:
    assert plan.judge is not None
    verdicts = {r["key"]: r["verdict"] for r in log.of_kind("judgement")}
    judge, base, suite = known[plan.judge], plan.variants[0], plan.suite
    comparisons = []
    for other in plan.variants[1:]:
        pairs: list[tuple[float, float]] = []
        for question in suite.questions:
            a_key = answer_key(known[base], suite, question)
            b_key = answer_key(known[other], suite, question)
            first = verdicts.get(judgement_key(judge, a_key, b_key, 0))
            second = verdicts.get(judgement_key(judge, a_key, b_key, 1))
            if first is None or second is None:
                continue
            b_score = combined(first, second)
            pairs.append((1.0 - b_score, b_score))
        comparisons.append(compare_scores(base.name, other.name, pairs))
    return comparisons


def text(summary: Summary, suite_name: str) -> str:
    """Markdown: the accuracy table and one line per comparison."""
    lines = [f"suite {suite_name}", ""]
    if summary.judged:
        lines += ["| target | answered | errors | mean s |", "|---|---|---|---|"]
        for a in summary.accuracy:
            lines.append(
                f"| {a.variant.name} | {a.answered}/{a.questions} | {a.errors} | {_s(a.seconds)} |"
            )
    else:
        lines += [
            "| target | answered | correct | accuracy | 95% interval | errors | mean s |",
            "|---|---|---|---|---|---|---|",
        ]
        for a in summary.accuracy:
            interval = a.interval()
            shown = "-" if interval is None else f"{interval[0]:.0%}-{interval[1]:.0%}"
            rate = "-" if a.rate is None else f"{a.rate:.1%}"
            lines.append(
                f"| {a.variant.name} | {a.answered}/{a.questions} | {a.correct:g} | {rate} | "
                f"{shown} | {a.errors} | {_s(a.seconds)} |"
            )
    lines.append("")
    for c in summary.comparisons:
        d = c.difference
        if summary.judged:
            counts = f"wins {c.b_only}, losses {c.a_only}, ties {c.ties} of {c.questions}"
            low, high = d.low / 2 + 0.5, d.high / 2 + 0.5
            effect = f"preference for B {d.estimate / 2 + 0.5:.2f} [{low:.2f}, {high:.2f}]"
            test = "sign test"
        else:
            counts = f"{c.b_only} right only B, {c.a_only} right only A, {c.questions} paired"
            effect = f"B - A {d.estimate:+.1%} [{d.low:+.1%}, {d.high:+.1%}]"
            test = "McNemar exact"
        lines.append(
            f"- B={c.challenger} vs A={c.baseline}: {counts}; {effect} (bootstrap 95%); "
            f"{test} p={c.p_value:.3g}: {c.verdict()}"
        )
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
