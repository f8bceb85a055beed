"""Pairwise judging of free-form answers by a model the user names.

Each pair is judged twice, once in each order, because judges favour a position; a win
counts only when both orders agree, anything else is a tie. The judge answers with one
letter, read by :func:`verdict`.
"""

from __future__ import annotations

import re

from llamasup.evaluate.suite import Question

JUDGE_SAMPLING = {"temperature": 0.0, "seed": 0, "max_tokens": 16}


def judge_messages(question: Question, first: str, second: str) -> list[dict[str, str]]:
    criteria = question.data.get("criteria") or (
        "Prefer the answer that is correct, helpful and follows the request; ignore length."
    )
    text = (
        "You compare two answers to the same request.\n"
        f"{criteria}\n\n[Request]\n{question.data['prompt']}\n\n"
        f"[Response A]\n{first}\n\n[Response B]\n{second}\n\n"
        "Which response is better? Reply with one letter: A or B (T for a tie)."
    )
    return [{"role": "user", "content": text}]


def verdict(reply: str) -> str:
    """``"A"``, ``"B"`` or ``"T"`` (a tie, also for a reply that names neither)."""
    match = re.search(r"\b(A|B|T|tie)\b", reply, flags=re.IGNORECASE)
    if match is None:
        return "T"
    word = match.group(1).upper()
    return "T" if word == "TIE" else word


def combined(first_order: str, second_order: str) -> float:
    """B's score for a question from the two verdicts: 1 win, 0.5 tie, 0 loss.

    In the first order A is shown first; in the second, B is shown first (as "A").
    """
    b_in_first = {"A": 0.0, "B": 1.0}.get(first_order, 0.5)
    b_in_second = {"A": 1.0, "B": 0.0}.get(second_order, 0.5)
    if b_in_first == b_in_second:
        return b_in_first
    return 0.5
