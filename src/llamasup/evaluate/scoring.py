"""Prompts for each suite kind, and reading the answer back out of a reply: the letter of a
multiple-choice answer, the final number of a worked problem, the code of a function."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from llamasup.evaluate.suite import LETTERS, Question, Suite

Message = dict[str, str]


def messages(suite: Suite, question: Question) -> list[Message]:
    """The chat messages one question is asked with."""
    data = question.data
    if suite.kind == "choice":
        options = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(data["choices"]))
        text = (
            "Answer the multiple-choice question with the letter of the correct option.\n\n"
            f"{data['question']}\n\n{options}\n\nAnswer:"
        )
        return [{"role": "user", "content": text}]
    if suite.kind == "numeric":
        text = (
            "Solve the problem. Finish with a last line of the form '#### <number>'.\n\n"
            f"{data['question']}"
        )
        return [{"role": "user", "content": text}]
    if suite.kind == "code":
        text = (
            "Complete this Python function. Reply with the whole function in one "
            f"```python block.\n\n```python\n{data['prompt']}```"
        )
        return [{"role": "user", "content": text}]
    system = data.get("system")
    head: list[Message] = [{"role": "system", "content": str(system)}] if system else []
    return [*head, {"role": "user", "content": str(data["prompt"])}]


_LETTER_PATTERNS = (
    r"answer\s*(?:is|:)?\s*:?\s*\(?\**([A-J])\b",
    r"^\s*\(?\**([A-J])\**\s*[\).:]",
    r"^\s*\(?([A-J])\)?\s*$",
    r"\b([A-J])\b",
)


def extract_letter(reply: str, choices: int) -> str | None:
    """The option letter a reply picks: ``The answer is (B)``, ``B.``, ``B``, ... else None."""
    allowed = LETTERS[:choices]
    for pattern in _LETTER_PATTERNS:
        for match in re.finditer(pattern, reply, flags=re.IGNORECASE | re.MULTILINE):
            letter = match.group(1).upper()
            # a bare "a" is an article, not an answer: lower case only after "answer"
            if letter in allowed and (match.group(1).isupper() or pattern is _LETTER_PATTERNS[0]):
                return letter
    return None


_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"


def extract_number(reply: str) -> str | None:
    """The final answer of a worked problem: after ``####``, else after "answer is", else the
    last number in the reply (GSM8K's convention); commas and ``$`` dropped."""
    for pattern in (rf"####\s*({_NUMBER})", rf"answer\s*(?:is|:)\s*:?\s*({_NUMBER})"):
        found = re.findall(pattern, reply, flags=re.IGNORECASE)
        if found:
            return _clean(found[-1])
    numbers = re.findall(_NUMBER, reply)
    return _clean(numbers[-1]) if numbers else None


def _clean(text: str) -> str:
    return text.replace(",", "").replace("$", "").rstrip(".")


def same_number(given: str | None, expected: Any) -> bool:
    if given is None:
        return False
    try:
        return Decimal(given) == Decimal(_clean(str(expected)))
    except InvalidOperation:
        return False


_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def code_program(question: Question, reply: str) -> str:
    """A script that defines the model's function and runs the suite's ``check`` on it.

    A fenced block that defines the entry point is the whole function; otherwise the reply
    (or its block) is the body that continues the prompt, as in HumanEval.
    """
    data = question.data
    entry = str(data["entry_point"])
    blocks = _FENCE.findall(reply)
    body = blocks[0] if blocks else reply
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", body, flags=re.MULTILINE):
        solution = body
    else:
        solution = str(data["prompt"]) + body
    return f"{solution}\n\n{data['test']}\n\ncheck({entry})\n"
