"""The eval loop: every target answers every question (one target's sidecar at a time),
each answer scored and written to the result log before the next question; then, for a
``judge`` suite with a judge, every challenger's answers are judged against the first
target's, in both orders.

An answer's key is (the question's content, the suite kind, the sampling, the prompt
template, llama-server build, model file identity, target and flags); a judgement's is
(judge, the two answers' keys, the order). A resumed run asks nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from llamasup.errors import LlamasupError
from llamasup.evaluate import judge as judging
from llamasup.evaluate import scoring
from llamasup.evaluate.sandbox import Limits, run_program
from llamasup.evaluate.suite import Question, Suite
from llamasup.harness.progress import Progress
from llamasup.harness.records import ResultLog, record_key
from llamasup.harness.session import Endpoint, Session, variant_identity
from llamasup.harness.targets import Variant

#: bump when the prompts change: answers to other prompts are other answers
TEMPLATE = "v1"


class EvalError(LlamasupError):
    """The eval cannot run as asked (code without --allow-code-execution, ...)."""


@dataclass(frozen=True)
class EvalPlan:
    suite: Suite
    variants: Sequence[Variant]
    judge: Variant | None = None
    allow_code: bool = False
    limits: Limits = field(default_factory=Limits)
    keep_loaded: bool = False

    def check(self) -> None:
        if self.suite.kind == "code" and not self.allow_code:
            raise EvalError(
                f"suite {self.suite.name!r} runs model-written code against its tests: pass "
                "--allow-code-execution to allow that (see the README for its limits)"
            )
        if self.judge is not None and self.suite.kind != "judge":
            raise EvalError(
                f"--judge applies to judge suites; {self.suite.name!r} is {self.suite.kind}"
            )
        if self.suite.kind == "judge" and self.judge is not None and len(self.variants) < 2:
            raise EvalError("a judge compares two targets or more: name at least two")


def answer_key(identity: Mapping[str, Any], suite: Suite, question: Question) -> str:
    return record_key(
        {
            **identity,
            "kind": suite.kind,
            "question": record_key(question.data),
            "sampling": dict(suite.sampling),
            "template": TEMPLATE,
        }
    )


def judgement_key(judge: Mapping[str, Any], a_key: str, b_key: str, order: int) -> str:
    return record_key(
        {"judge": judge, "a": a_key, "b": b_key, "order": order, "template": TEMPLATE}
    )


def identities(session: Session, plan: EvalPlan) -> dict[Variant, dict[str, Any]]:
    every = [*plan.variants, *([plan.judge] if plan.judge is not None else [])]
    return {variant: variant_identity(session, variant) for variant in every}


def count_units(plan: EvalPlan, log: ResultLog, known: Mapping[Variant, Any]) -> tuple[int, int]:
    """(all units, units already in the log): answers, and judgements when judged."""
    questions = plan.suite.questions
    keys = [answer_key(known[v], plan.suite, q) for v in plan.variants for q in questions]
    total, done = len(keys), sum(log.done(k) for k in keys)
    if plan.judge is not None:
        judge = known[plan.judge]
        first = plan.variants[0]
        for challenger in plan.variants[1:]:
            for question in questions:
                a_key = answer_key(known[first], plan.suite, question)
                b_key = answer_key(known[challenger], plan.suite, question)
                for order in (0, 1):
                    total += 1
                    done += log.done(judgement_key(judge, a_key, b_key, order))
    return total, done


async def ask(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    chat: list[dict[str, str]],
    sampling: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """One chat completion: the reply text and what it cost (seconds, tokens)."""
    body = {**endpoint.fields, **sampling, "messages": chat, "stream": False}
    start = time.perf_counter()
    response = await client.post(
        f"{endpoint.url}/v1/chat/completions", json=body, headers=endpoint.headers
    )
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise EvalError(f"HTTP {response.status_code}: {response.text[:300]}")
    data = response.json()
    text = str(((data.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
    usage = data.get("usage") or {}
    return text, {"seconds": round(seconds, 4), "completion_tokens": usage.get("completion_tokens")}


async def score(plan: EvalPlan, question: Question, reply: str) -> dict[str, Any]:
    """What the reply is worth: ``score`` 1.0/0.0 and how it was read (None for judge)."""
    kind, data = plan.suite.kind, question.data
    if kind == "choice":
        picked = scoring.extract_letter(reply, len(data["choices"]))
        return {"extracted": picked, "score": float(picked == question.answer_letter())}
    if kind == "numeric":
        number = scoring.extract_number(reply)
        return {"extracted": number, "score": float(scoring.same_number(number, data["answer"]))}
    if kind == "code":
        execution = await run_program(scoring.code_program(question, reply), plan.limits)
        return {"execution": execution.as_dict(), "score": float(execution.passed)}
    return {"score": None}


async def run_eval(
    session: Session,
    plan: EvalPlan,
    log: ResultLog,
    known: Mapping[Variant, Mapping[str, Any]],
    progress: Progress | None = None,
) -> None:
    """Ask, score and judge whatever of ``plan`` is not yet in ``log``, unit by unit."""
    plan.check()
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600.0, limits=limits, trust_env=False) as client:
        run = _Run(client, session, plan, log, known, progress)
        for variant in plan.variants:
            await run.answer_all(variant)
        if plan.judge is not None:
            await run.judge_all(plan.judge)


@dataclass
class _Run:
    client: httpx.AsyncClient
    session: Session
    plan: EvalPlan
    log: ResultLog
    known: Mapping[Variant, Mapping[str, Any]]
    progress: Progress | None

    def tick(self) -> None:
        if self.progress is not None:
            self.progress.advance()

    async def answer_all(self, variant: Variant) -> None:
        suite, log, identity = self.plan.suite, self.log, self.known[variant]
        pending = [q for q in suite.questions if not log.done(answer_key(identity, suite, q))]
        if not pending:
            return
        if self.progress is not None:
            self.progress.note(variant.name)
        try:
            async with self.session.use(variant) as endpoint:
                for question in pending:
                    await self._answer(endpoint, variant, question)
                    self.tick()
        finally:
            if not self.plan.keep_loaded:
                await self.session.release(variant)

    async def _answer(self, endpoint: Endpoint, variant: Variant, question: Question) -> None:
        suite, identity = self.plan.suite, self.known[variant]
        record: dict[str, Any] = {
            "kind": "answer",
            "suite": suite.name,
            "question": question.id,
            "identity": dict(identity),
            "variant": variant.as_dict(),
            "sampling": dict(suite.sampling),
        }
        try:
            chat = scoring.messages(suite, question)
            reply, cost = await ask(self.client, endpoint, chat, suite.sampling)
        except (EvalError, httpx.HTTPError) as exc:
            # not kept as done: a resume asks again
            self.log.append(
                {**record, "kind": "answer-error", "error": str(exc), "at": time.time()}
            )
            return
        scored = await score(self.plan, question, reply)
        key = answer_key(identity, suite, question)
        self.log.append({**record, "key": key, "reply": reply, **cost, **scored, "at": time.time()})

    def _judge_work(self, judge: Variant) -> list[tuple[Question, Variant, int, str, str]]:
        suite, known = self.plan.suite, self.known
        answers = {r["key"] for r in self.log.of_kind("answer")}
        baseline = self.plan.variants[0]
        work = []
        for challenger in self.plan.variants[1:]:
            for question in suite.questions:
                a_key = answer_key(known[baseline], suite, question)
                b_key = answer_key(known[challenger], suite, question)
                if a_key not in answers or b_key not in answers:
                    continue  # an answer failed: nothing to judge
                for order in (0, 1):
                    if not self.log.done(judgement_key(known[judge], a_key, b_key, order)):
                        work.append((question, challenger, order, a_key, b_key))
        return work

    async def judge_all(self, judge: Variant) -> None:
        work = self._judge_work(judge)
        if not work:
            return
        if self.progress is not None:
            self.progress.note(f"judge {judge.name}")
        replies = {r["key"]: r["reply"] for r in self.log.of_kind("answer")}
        try:
            async with self.session.use(judge) as endpoint:
                for question, challenger, order, a_key, b_key in work:
                    first, second = replies[a_key], replies[b_key]
                    if order == 1:
                        first, second = second, first
                    chat = judging.judge_messages(question, first, second)
                    record = {
                        "kind": "judgement",
                        "suite": self.plan.suite.name,
                        "question": question.id,
                        "baseline": self.plan.variants[0].as_dict(),
                        "challenger": challenger.as_dict(),
                        "a": a_key,
                        "b": b_key,
                        "order": order,
                        "judge": dict(self.known[judge]),
                    }
                    try:
                        raw, _ = await ask(self.client, endpoint, chat, judging.JUDGE_SAMPLING)
                    except (EvalError, httpx.HTTPError) as exc:
                        self.log.append({**record, "kind": "judgement-error", "error": str(exc)})
                    else:
                        key = judgement_key(self.known[judge], a_key, b_key, order)
                        verdict = judging.verdict(raw)
                        self.log.append(
                            {
                                **record,
                                "key": key,
                                "verdict": verdict,
                                "raw": raw,
                                "at": time.time(),
                            }
                        )
                    self.tick()
        finally:
            if not self.plan.keep_loaded:
                await self.session.release(judge)
