"""Suites: local JSON-lines files of questions, one kind per suite (schema in the README).

The first line is the header, ``{"suite": {"name", "kind", "sampling", "description"}}``;
every other line is a question with an ``id`` unique in the file:

- ``choice`` (MMLU-style): ``{"id", "question", "choices": [...], "answer": "B"}`` (a letter,
  or the 0-based index of the right choice)
- ``numeric`` (GSM8K-style): ``{"id", "question", "answer": 18}`` (a number or its text)
- ``code`` (HumanEval-style): ``{"id", "prompt", "entry_point", "test"}`` where ``test``
  defines ``check(candidate)``
- ``judge`` (free-form agent prompts): ``{"id", "prompt"}`` and optionally ``"system"`` and
  ``"criteria"`` (what the judge should weigh)

``sampling`` is sent with every request (``temperature`` 0 and ``seed`` 0 unless the suite says
otherwise; ``max_tokens`` per kind), so a rerun asks exactly what the last run asked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llamasup.errors import LlamasupError

Kind = Literal["choice", "numeric", "code", "judge"]
KINDS: tuple[Kind, ...] = ("choice", "numeric", "code", "judge")
LETTERS = "ABCDEFGHIJ"

#: answers long enough to reason a little before the final answer
DEFAULT_MAX_TOKENS: Mapping[str, int] = {"choice": 64, "numeric": 320, "code": 400, "judge": 320}
_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "choice": ("question", "choices", "answer"),
    "numeric": ("question", "answer"),
    "code": ("prompt", "entry_point", "test"),
    "judge": ("prompt",),
}


class SuiteError(LlamasupError):
    """A suite file that does not follow the schema (the message names file and line)."""


@dataclass(frozen=True)
class Question:
    id: str
    data: Mapping[str, Any]

    def answer_letter(self) -> str:
        """The right letter of a ``choice`` question."""
        answer = self.data["answer"]
        return LETTERS[answer] if isinstance(answer, int) else str(answer).strip().upper()


@dataclass(frozen=True)
class Suite:
    name: str
    kind: Kind
    sampling: Mapping[str, Any]
    questions: Sequence[Question]
    description: str = ""
    #: a hash of the header and every question: results are keyed by it
    fingerprint: str = field(default="", compare=False)

    def limited(self, count: int | None) -> Suite:
        if count is None:
            return self
        return Suite(
            self.name,
            self.kind,
            self.sampling,
            self.questions[:count],
            self.description,
            self.fingerprint,
        )


def load_suite(path: Path) -> Suite:
    """Read and check a suite file.

    Raises:
        SuiteError: unreadable, no header, an unknown kind, a question missing a field or
            with an id already used (each message names the line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SuiteError(f"{path}: {exc}") from exc
    records: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise SuiteError(f"{path}:{number}: not JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise SuiteError(f"{path}:{number}: not a JSON object")
        records.append((number, record))
    if not records or not isinstance(records[0][1].get("suite"), dict):
        raise SuiteError(f'{path}:1: the first line must be {{"suite": {{"name", "kind", ...}}}}')
    header = records[0][1]["suite"]
    kind = header.get("kind")
    if kind not in KINDS:
        raise SuiteError(f"{path}:{records[0][0]}: suite kind {kind!r} is not one of {KINDS}")
    sampling = {"temperature": 0.0, "seed": 0, "max_tokens": DEFAULT_MAX_TOKENS[kind]}
    sampling.update(header.get("sampling") or {})
    questions: list[Question] = []
    seen: set[str] = set()
    for number, record in records[1:]:
        where = f"{path}:{number}"
        qid = record.get("id")
        if not isinstance(qid, (str, int)) or str(qid) in seen:
            raise SuiteError(f"{where}: each question needs an id of its own (got {qid!r})")
        missing = [name for name in _REQUIRED[kind] if name not in record]
        if missing:
            raise SuiteError(f"{where}: a {kind} question needs {', '.join(missing)}")
        if kind == "choice":
            _check_choice(record, where)
        seen.add(str(qid))
        questions.append(Question(str(qid), record))
    if not questions:
        raise SuiteError(f"{path}: no questions after the header")
    canonical = json.dumps(
        [header, *(q.data for q in questions)], sort_keys=True, separators=(",", ":")
    )
    return Suite(
        str(header.get("name") or path.stem),
        kind,
        sampling,
        questions,
        str(header.get("description") or ""),
        hashlib.sha256(canonical.encode()).hexdigest()[:16],
    )


def _check_choice(record: Mapping[str, Any], where: str) -> None:
    choices = record["choices"]
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
        raise SuiteError(f"{where}: choices must be a list of 2 to {len(LETTERS)} texts")
    answer = record["answer"]
    letters = LETTERS[: len(choices)]
    ok = (isinstance(answer, int) and 0 <= answer < len(choices)) or (
        isinstance(answer, str) and answer.strip().upper() in letters
    )
    if not ok:
        raise SuiteError(f"{where}: answer {answer!r} is not one of {', '.join(letters)}")
