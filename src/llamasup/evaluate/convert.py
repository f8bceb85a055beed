"""Convert the standard datasets, downloaded by you, into llamasup suites.

    python -m llamasup.evaluate.convert mmlu  data/test/anatomy_test.csv -o mmlu-anatomy.jsonl
    python -m llamasup.evaluate.convert gsm8k test.jsonl -o gsm8k.jsonl --limit 50
    python -m llamasup.evaluate.convert humaneval HumanEval.jsonl.gz -o humaneval.jsonl

Inputs: MMLU as its original CSV files (question, four options, answer letter; no header) or
JSON lines of ``{"question", "choices", "answer": index}`` (the Hugging Face ``cais/mmlu``
rows); GSM8K as its JSON lines (``{"question", "answer": "... #### 18"}``); HumanEval as its
``.jsonl`` or ``.jsonl.gz`` (``task_id``, ``prompt``, ``entry_point``, ``test``).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def mmlu(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            for number, fields in enumerate(csv.reader(handle)):
                question, *choices, answer = fields
                yield {
                    "id": f"{path.stem}/{number}",
                    "question": question,
                    "choices": choices,
                    "answer": answer.strip().upper(),
                }
        return
    for number, row in enumerate(_lines(path)):
        yield {
            "id": f"{row.get('subject', path.stem)}/{number}",
            "question": row["question"],
            "choices": list(row["choices"]),
            "answer": int(row["answer"]),
        }


def gsm8k(path: Path) -> Iterator[dict[str, Any]]:
    for number, row in enumerate(_lines(path)):
        final = str(row["answer"]).rsplit("####", 1)[-1].strip().replace(",", "")
        yield {"id": f"gsm8k/{number}", "question": row["question"], "answer": final}


def humaneval(path: Path) -> Iterator[dict[str, Any]]:
    for row in _lines(path):
        yield {
            "id": row["task_id"],
            "prompt": row["prompt"],
            "entry_point": row["entry_point"],
            "test": row["test"],
        }


FORMATS = {"mmlu": ("choice", mmlu), "gsm8k": ("numeric", gsm8k), "humaneval": ("code", humaneval)}


def convert(fmt: str, source: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The suite's lines: its header, then the questions."""
    kind, reader = FORMATS[fmt]
    questions = list(reader(source))[:limit]
    header = {
        "suite": {
            "name": f"{fmt}-{source.stem}",
            "kind": kind,
            "description": f"converted from {source.name}",
        }
    }
    return [header, *questions]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llamasup.evaluate.convert")
    parser.add_argument("format", choices=sorted(FORMATS))
    parser.add_argument("source", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    lines = convert(args.format, args.source, args.limit)
    args.output.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    print(f"{args.output}: {len(lines) - 1} questions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
